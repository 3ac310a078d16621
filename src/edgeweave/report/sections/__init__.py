"""One module per kind of result, each defining `KIND` (a SectionKind); see registry."""
