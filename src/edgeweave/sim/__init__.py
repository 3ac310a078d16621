"""The fleet simulator: thousands of devices, access points, edge servers and clouds, running
the same Plans the runtime runs (see DESIGN.md, "Many devices, one fleet")."""
