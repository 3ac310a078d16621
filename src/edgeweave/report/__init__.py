"""The report: one self-contained HTML page of what EdgeWeave runs wrote (plans, runtime runs,
federated runs, benchmarks), read back from the JSON and JSONL files the commands write.

    write_report(["out/plan.json", "out/run.json", "out/fl/digits-fedavg"], "report.html")

It sits above the rest of EdgeWeave and reads plain files, not live objects, so any saved run
can be reported later, on another machine.
"""

from edgeweave.report.build import Report, build_report, write_report

__all__ = ["Report", "build_report", "write_report"]
