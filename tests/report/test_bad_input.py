"""Bad input to the report: one clear error naming each file at fault, and a report of the
rest still written."""

import json

import pytest
from report_helpers import sections_of

from edgeweave.errors import ReportError
from edgeweave.report import build_report, write_report


def _partial(paths, out):
    """Write the report; return (error message, page sections) -- an error is expected."""
    with pytest.raises(ReportError) as err:
        write_report(paths, out)
    return str(err.value), sections_of(out.read_text())


def test_a_folder_with_no_results_is_named_and_the_rest_reported(data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    msg, sections = _partial([empty, data / "plan_alexnet.json"], tmp_path / "r.html")
    assert msg.startswith(f"partial report written to {tmp_path / 'r.html'}")
    assert f"{empty}: no results found in this folder" in msg
    assert [kind for kind, _ in sections.values()] == ["plan"]
    assert "no results found in this folder" in (tmp_path / "r.html").read_text()


def test_a_corrupt_metrics_line_is_named_and_the_other_rounds_shown(data, tmp_path):
    metrics = data / "fl_digits_fedavg" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[2] = lines[2][:40]  # torn mid-record
    metrics.write_text("\n".join(lines) + "\n")
    msg, sections = _partial([data / "fl_digits_fedavg"], tmp_path / "r.html")
    assert f"{metrics}: unreadable line skipped: line 3: not valid JSON" in msg
    assert len(msg.splitlines()) == 2  # the summary, then one line for the one bad file
    ((kind, _),) = sections.values()
    assert kind == "federated run"
    report = build_report([data / "fl_digits_fedavg"])
    assert dict(report.sections[0].numbers)["rounds"] == str(len(lines) - 1)


def test_a_corrupt_json_file_is_named_with_its_line(data, tmp_path):
    bad = data / "plan_alexnet.json"
    bad.write_text(bad.read_text()[:500])
    msg, sections = _partial([bad, data / "run_lab_resnet18.json"], tmp_path / "r.html")
    assert f"{bad}: not valid JSON (line " in msg
    assert [kind for kind, _ in sections.values()] == ["runtime run"]


@pytest.mark.parametrize("name", ["plan_alexnet.json", "run_lab_resnet18.json",
                                  "bench_plan_speed.json", "fl_digits_dp/run.json"])
def test_a_file_from_a_newer_version_is_refused_by_name(data, tmp_path, name):
    newer = data / name
    doc = json.loads(newer.read_text())
    doc["format_version"] = 99
    newer.write_text(json.dumps(doc))
    msg, sections = _partial([data / name.split("/")[0], data / "fl_digits_fedavg"],
                             tmp_path / "r.html")
    assert (f"{newer}: written by a newer EdgeWeave (format_version 99; this one reads up to 1)"
            in msg)
    assert [kind for kind, _ in sections.values()] == ["federated run"]  # the rest is shown


def test_unknown_missing_and_malformed_inputs_each_get_one_error(data, tmp_path):
    unknown = tmp_path / "exits.json"
    unknown.write_text(json.dumps({"model": "digits-cnn", "exits": []}))
    plan = json.loads((data / "plan_alexnet.json").read_text())
    del plan["tiers"]
    broken = tmp_path / "plan.json"
    broken.write_text(json.dumps(plan))
    missing = tmp_path / "nope.json"
    msg, sections = _partial([unknown, missing, broken], tmp_path / "r.html")
    assert msg.startswith("report with nothing in it written to")
    assert f"{unknown}: not a result the report knows" in msg
    assert f"{missing}: no such file or folder" in msg
    assert f"{broken}: tiers: missing or not a list" in msg
    assert len(msg.splitlines()) == 4 and sections == {}
    assert "Nothing could be read." in (tmp_path / "r.html").read_text()


def test_a_folder_is_searched_and_files_that_are_not_results_are_left_out(data, tmp_path):
    runs = tmp_path / "out"
    (runs / "fl").mkdir(parents=True)
    (data / "fl_digits_dp").rename(runs / "fl" / "digits-dp")
    (data / "plan_alexnet.json").rename(runs / "plan.json")
    (runs / "profile.json").write_text(json.dumps({"model": "x", "nodes": []}))
    report = build_report([runs])
    assert not report.problems
    assert sorted(s.kind for s in report.sections) == ["federated run", "plan"]
    assert report.skipped == [runs / "profile.json"]
    (runs / "half.json").write_text("{")  # a results file cut short is a problem, not skipped
    assert [p.path for p in build_report([runs]).problems] == [runs / "half.json"]


def test_no_input_at_all_is_refused():
    with pytest.raises(ReportError, match="no results given"):
        write_report([], "r.html")
