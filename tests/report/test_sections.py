"""Each kind of section, built from the output of a real run, shows that run's own numbers."""

import itertools
import json
import re

import pytest
from report_helpers import DATA, sections_of

from edgeweave.report import build_report, write_report
from edgeweave.report.markup import fmt


def _only(paths):
    report = build_report(paths)
    assert not report.problems, report.problems
    assert len(report.sections) == 1
    return report.sections[0]


def _numbers(section):
    return dict(section.numbers)


def _figures(section):
    return [b.fig for b in section.blocks if hasattr(b, "fig")]


def test_plan_section_shows_the_modes_the_cut_and_the_neurosurgeon_figure():
    doc = json.loads((DATA / "plan_alexnet.json").read_text())
    sec = _only([DATA / "plan_alexnet.json"])
    assert sec.kind == "plan" and "alexnet" in sec.title
    nums = _numbers(sec)
    assert nums["chosen mode"] == doc["mode"]
    assert nums["predicted latency"] == fmt(doc["predicted"]["total_ms"], "ms")
    device_only = next(a["total_ms"] for a in doc["alternatives"] if a["mode"] == "device-only")
    assert nums["vs device-only"] == f"{device_only / doc['predicted']['total_ms']:.2f}x"
    html = "".join(sec.html_blocks())
    for alt in doc["alternatives"]:
        assert f"<td>{alt['mode']}</td>" in html
    # the cut: layers per tier add up to the placement, and the chosen row is marked
    per_tier = re.findall(r"<tr><td>(device|edge|cloud)</td><td>[^<]*</td><td class=\"num\">"
                          r"(\d+)</td>", html)
    assert sum(int(n) for _, n in per_tier) == len(doc["placement"])
    assert f'<tr class="marked"><td>{doc["mode"]}</td>' in html
    modes_fig, layers_fig = _figures(sec)
    assert list(modes_fig.data[0].y) == [a["mode"] for a in doc["alternatives"]]
    layers = [n for n in doc["nodes"] if n["name"] not in doc["inputs"]]
    bars = [t for t in layers_fig.data if t.type == "bar"]
    assert [t.name.split()[0] for t in bars] == doc["tiers"]
    assert all(len(t.x) == len(layers) for t in bars)
    tiers = [doc["placement"][n["name"]] for n in layers]
    cuts = sum(a != b for a, b in itertools.pairwise(tiers))
    dashed = {s.x0 for s in layers_fig.layout.shapes if s.line.dash == "dash"}  # both panels
    single = {"device-only", "edge-only", "cloud-only"}
    assert len(dashed) == cuts and (cuts > 0) == (doc["mode"] not in single)


def test_runtime_section_compares_predicted_and_measured_per_segment():
    doc = json.loads((DATA / "run_lab_resnet18.json").read_text())
    sec = _only([DATA / "run_lab_resnet18.json"])
    nums = _numbers(sec)
    assert nums["median measured"] == fmt(doc["median_ms"], "ms")
    assert nums["predicted"] == fmt(doc["predicted_ms"], "ms")
    error = (doc["median_ms"] - doc["predicted_ms"]) / doc["predicted_ms"] * 100
    assert nums["measured vs predicted"] == f"{error:+.0f}%"
    html = "".join(sec.html_blocks())
    for key, ms in doc["median_segments"].items():
        row = re.search(rf"<tr><td>{re.escape(key)}</td>(.*?)</tr>", html)
        assert row and fmt(ms) in row[1]
    segments, requests = _figures(sec)
    measured = next(t for t in segments.data if t.name == "measured")
    assert dict(zip(measured.y, measured.x, strict=True)) == pytest.approx(
        doc["median_segments"])
    assert list(requests.data[0].y) == pytest.approx(doc["per_request_ms"])


def test_runtime_section_shows_adaptation_events_and_the_switch():
    doc = json.loads((DATA / "run_adapt_resnet18.json").read_text())
    sec = _only([DATA / "run_adapt_resnet18.json"])
    modes = list(dict.fromkeys(doc["per_request_mode"]))
    assert len(modes) == 2 and _numbers(sec)["mode"] == " → ".join(modes)
    assert _numbers(sec)["re-plans"] == str(sum(s["switched"] for s in doc["switches"]))
    html = "".join(sec.html_blocks())
    table = html.split("Adaptation events")[1]
    assert table.count('<tr class="marked">') == sum(s["switched"] for s in doc["switches"])
    assert len(re.findall(r"<tr[^>]*><td class=\"num\">\d+</td>", table)) == len(doc["switches"])
    requests = _figures(sec)[1]
    assert any("re-planned" in (s.text or "") for s in requests.layout.annotations)


def test_runtime_section_counts_fallbacks_and_says_why():
    doc = json.loads((DATA / "run_fallback_resnet18.json").read_text())
    sec = _only([DATA / "run_fallback_resnet18.json"])
    assert doc["fallbacks"] == 3 and _numbers(sec)["fallbacks"] == "3 of 3"
    html = "".join(sec.html_blocks())
    assert "3 request(s) fell back" in html and doc["fallback_notes"][0] in html
    marker = _figures(sec)[1].data[0].marker.color
    assert list(marker).count("#b3261e") == 3  # each fallen-back request drawn red


def test_federated_section_shows_accuracy_bytes_and_dropouts():
    rows = [json.loads(line) for line in
            (DATA / "fl_digits_fedavg" / "metrics.jsonl").read_text().splitlines()]
    sec = _only([DATA / "fl_digits_fedavg"])
    nums = _numbers(sec)
    assert sec.title == "Federated run: digits-fedavg"
    assert nums["rounds"] == str(len(rows))
    assert nums["final test accuracy"] == fmt(rows[-1]["test_acc"])
    assert nums["uploaded"] == fmt(sum(r["bytes_up"] for r in rows) / 1e6, "MB")
    failed, selected = sum(r["failed"] for r in rows), sum(r["selected"] for r in rows)
    assert failed > 0 and nums["clients dropped out"] == f"{failed} of {selected}"
    learning, traffic = _figures(sec)
    acc = next(t for t in learning.data if t.name == "test accuracy")
    assert list(acc.y) == pytest.approx([r["test_acc"] for r in rows])
    dropped = next(t for t in traffic.data if t.name == "dropped out")
    assert list(dropped.y) == [r["failed"] for r in rows]
    assert "fedavg (fraction 0.5)" in "".join(sec.html_blocks())  # from run.json


def test_federated_section_shows_the_privacy_spent_per_round():
    rows = [json.loads(line) for line in
            (DATA / "fl_digits_dp" / "metrics.jsonl").read_text().splitlines()]
    sec = _only([DATA / "fl_digits_dp" / "run.json"])  # naming run.json reports its folder
    assert sec.source == DATA / "fl_digits_dp"
    label, value = next((k, v) for k, v in sec.numbers if k.startswith("privacy spent"))
    assert value == f"ε = {fmt(rows[-1]['dp_epsilon'])}" and "δ=1e-05" in label
    eps = next(t for t in _figures(sec)[1].data if t.name == "ε spent")
    assert list(eps.y) == pytest.approx([r["dp_epsilon"] for r in rows])


def test_benchmark_section_shows_the_tables_it_printed():
    doc = json.loads((DATA / "bench_plan_speed.json").read_text())
    sec = _only([DATA / "bench_plan_speed.json"])
    assert sec.title == "Benchmark: plan_speed"
    html = "".join(sec.html_blocks())
    for t in doc["tables"]:
        assert f"<caption>{t['title']}</caption>" in html
        for row in t["rows"]:
            assert "".join(f">{c}</td>" for c in row) in re.sub(r"<td[^>]*>", ">", html)


def test_a_benchmark_json_without_printed_tables_shows_its_records(tmp_path):
    doc = json.loads((DATA / "bench_plan_speed.json").read_text())
    del doc["tables"], doc["format_version"]  # as written before either existed
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    html = "".join(_only([path]).html_blocks())
    assert "plan_ms.latency" in html
    for row in doc["rows"]:
        assert f"<td>{row['model']}</td>" in html
        assert fmt(row["plan_ms"]["latency"]) in html


def test_the_page_holds_every_result_and_needs_no_network(tmp_path):
    out = write_report([DATA], tmp_path / "r.html")  # a folder: searched for results
    page = out.read_text()
    found = sections_of(page)
    kinds = sorted(kind for kind, _ in found.values())
    assert kinds == ["benchmark", "federated run", "federated run", "plan", "runtime run",
                     "runtime run", "runtime run"]
    for anchor in found:
        assert f'href="#{anchor}"' in page  # listed under "What was run"
    # plotly.js inlined once in the head, nothing fetched
    assert page.count("<script type=\"text/javascript\">") == 1
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', page)
    assert page.index("What was run") < page.index('class="result"')
    assert "make_adapt_run.py" not in page  # not a result, not even listed as skipped


def test_a_federated_run_that_has_not_finished_a_round_shows_its_config(data):
    (data / "fl_digits_dp" / "metrics.jsonl").unlink()  # run.json is written before round 1
    sec = _only([data / "fl_digits_dp"])
    assert sec.kind == "federated run" and dict(sec.numbers)["rounds"] == "0"
    html = "".join(sec.html_blocks())
    assert "No round recorded yet" in html and "dp_fedavg" in html


def test_names_from_a_results_file_are_shown_as_text_not_markup(data, tmp_path):
    path = data / "run_lab_resnet18.json"
    doc = json.loads(path.read_text())
    doc["model"] = "<img src=x onerror=alert(1)>"
    doc["median_segments"]["</script><script>alert(2)</script>"] = 1.0
    path.write_text(json.dumps(doc))
    page = write_report([path], tmp_path / "r.html").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page
    assert "<script>alert(2)" not in page
