"""The study report: built from the committed studies, rendered in a real headless Chromium with no console error,
and model output on it escaped (a completion that is a script does not run)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from orderopt.report_page import build_sections, write_report
from orderopt.store import load_records

STUDIES = Path(__file__).resolve().parent.parent / "studies"
PAYLOAD_SCRIPT = "<script>alert(1)</script>"
PAYLOAD_IMG = '<img src=x onerror="window.__xss=1">'


def _copy(study: str, tmp_path: Path) -> Path:
    dst = tmp_path / study
    shutil.copytree(STUDIES / study, dst, ignore=shutil.ignore_patterns("report.html", "figures", "base_model"))
    return dst


def _inject(study_dir: Path) -> None:
    """Put hostile model output and task text into the record whose completions the report shows."""
    search = json.loads((study_dir / "search.json").read_text())
    target = min(
        (r for r in load_records(study_dir) if r["schedule_key"] == search["recommendation"]), key=lambda r: r["seed"]
    )
    path = study_dir / "runs" / target["run_id"] / "result.json"
    record = json.loads(path.read_text())
    record["evals"][-1]["examples"] = {
        "arith": [{"prompt": PAYLOAD_IMG, "completion": PAYLOAD_SCRIPT, "score": 0.5}],
        "names": [{"prompt": "</script><script>window.__xss=2</script>", "completion": "&amp; <b>x</b>", "score": 1}],
    }
    path.write_text(json.dumps(record))


def test_the_report_has_every_section_its_study_has_data_for() -> None:
    search = [s.key for s in build_sections(STUDIES / "search-reference")]
    assert search == [
        "transfer",
        "prediction",
        "search",
        "leaderboard",
        "stages",
        "examples",
        "compute",
    ]  # the recommendation's completions: its records keep examples
    plain = [s.key for s in build_sections(STUDIES / "rich")]  # a study of runs and the replay benchmark, no search
    assert plain == ["transfer", "prediction", "replay", "leaderboard", "stages", "compute"]
    assert build_sections(STUDIES / "default") == []  # no runs


def test_model_output_and_task_text_are_escaped(tmp_path: Path) -> None:
    study = _copy("search-reference", tmp_path)
    _inject(study)
    page = write_report(study, png=False).read_text()
    assert PAYLOAD_SCRIPT not in page and PAYLOAD_IMG not in page and "window.__xss=2</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    # figure data sits in <script> blocks as JSON: no markup character in it can close the block
    assert page.count("</script>") == 2  # plotly.js, and the figures


def _chromium() -> tuple[str, str] | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    return (found[0], found[1]) if found[0] and found[1] else None


@pytest.fixture(scope="module")
def browser() -> object:
    """Headless Chromium through its driver (Debian's chromium and chromium-driver; .ci/run installs them)."""
    found = _chromium()
    if found is None:
        if os.environ.get("ORDEROPT_BROWSER_TESTS") == "required":
            pytest.fail("ORDEROPT_BROWSER_TESTS=required but no chromium and chromedriver on PATH")
        pytest.skip("no chromium/chromedriver on PATH (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    yield driver
    driver.quit()


def _open(driver: object, page: Path) -> list[dict]:
    """Load ``page``, wait until every figure has rendered, and return the console's messages."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page.as_uri())  # type: ignore[attr-defined]
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(
            "return window.orderoptFigures !== undefined && "
            "document.querySelectorAll('.figure.js-plotly-plot .main-svg').length > 0 && "
            "document.querySelectorAll('.figure.js-plotly-plot').length === window.orderoptFigures"
        )
    )
    return list(driver.get_log("browser"))  # type: ignore[attr-defined]


@pytest.mark.parametrize("study", ["reference", "rich", "search-reference"])
def test_the_report_renders_in_chromium_without_console_errors(browser: object, study: str, tmp_path: Path) -> None:
    page = write_report(_copy(study, tmp_path), png=False)
    console = _open(browser, page)
    assert [m for m in console if m["level"] in ("SEVERE", "WARNING")] == [], console
    n = browser.execute_script("return window.orderoptFigures")  # type: ignore[attr-defined]
    svgs = browser.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('.figure')).map(d => d.querySelectorAll('svg').length)"
    )
    assert n >= 4 and len(svgs) == n and all(svgs), svgs  # every figure drew something
    height = browser.execute_script("return document.body.scrollHeight")  # type: ignore[attr-defined]
    browser.set_window_size(1200, height)  # type: ignore[attr-defined]
    shots = Path(os.environ.get("ORDEROPT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shots / f"report-{study}.png"))  # type: ignore[attr-defined]
    browser.set_window_size(1200, 900)  # type: ignore[attr-defined]


def test_a_completion_that_is_a_script_does_not_run(browser: object, tmp_path: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    study = _copy("search-reference", tmp_path)
    _inject(study)
    _open(browser, write_report(study, png=False))
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # type: ignore[attr-defined]  # noqa: B018
    assert browser.execute_script("return window.__xss === undefined")  # type: ignore[attr-defined]
    text = browser.find_element("id", "examples").text  # type: ignore[attr-defined]
    assert PAYLOAD_SCRIPT in text and PAYLOAD_IMG in text  # shown as the text it is


def test_png_figures_for_papers(tmp_path: Path) -> None:
    if _chromium() is None:
        pytest.skip("plotly's PNG export (kaleido) needs a Chromium")
    study = _copy("search-reference", tmp_path)
    write_report(study)
    pngs = sorted(p.name for p in (study / "figures").glob("*.png"))
    assert pngs == [
        "compute-0.png",
        "prediction-0.png",
        "search-0.png",
        "stages-0.png",
        "transfer-0.png",
        "transfer-1.png",
    ]
    assert all((study / "figures" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_optuna_dashboard_serves_the_search_of_a_study(tmp_path: Path) -> None:
    """The README's command: optuna-dashboard on the study's storage lists its Optuna studies over HTTP."""
    import socket
    import subprocess
    import time
    import urllib.request

    if shutil.which("optuna-dashboard") is None:
        pytest.skip("optuna-dashboard is not installed (pip install 'orderopt[dashboards]')")
    storage = f"sqlite:///{_copy('search-reference', tmp_path) / 'optuna.db'}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [shutil.which("optuna-dashboard") or "", storage, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, body = time.time() + 60, None
        while body is None and time.time() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    body = json.loads(response.read())
            except OSError:
                time.sleep(0.5)
        assert body is not None, f"optuna-dashboard did not answer: {server.stderr.read() if server.poll() else ''}"
        names = {s["study_name"] for s in body["study_summaries"]}
        assert "search-reference:full-runs" in names and any(n.startswith("search-reference:predicted:") for n in names)
        full = next(s for s in body["study_summaries"] if s["study_name"] == "search-reference:full-runs")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{full['study_id']}", timeout=10) as response:
            trials = json.loads(response.read())["trials"]
        assert len(trials) >= 6  # the search's full runs, one trial each
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_wandb_workspace_definition_builds_offline() -> None:
    """dashboards/wandb_workspace.py: built and serialised to wandb's view model, not saved (no account needed)."""
    import importlib.util

    pytest.importorskip("wandb_workspaces")
    spec = importlib.util.spec_from_file_location(
        "wandb_workspace", STUDIES.parent / "dashboards" / "wandb_workspace.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tasks, domains = module._from_study(str(STUDIES / "reference"), None)
    assert tasks == ["arith", "strings", "qa", "names"] and domains["names"] == "open"
    workspace = module.build_workspace("me", "orderopt", "reference", tasks, domains=domains)
    view = json.loads(workspace._to_model().model_dump_json())  # what .save() would send
    text = json.dumps(view)
    metrics = ("eval/scores/names", "eval/entropy/arith", "train/rewards/qa_reward/mean", "search/recommended_mean")
    for metric in (*metrics, "search/best_so_far"):
        assert metric in text, metric
    assert '"reference"' in text  # the runset keeps the study's runs (wandb group)
    assert '"jobType"' in text and '"merge-part"' in text  # ... but not a merge's per-task runs
    with pytest.raises(ValueError, match="no tasks given"):
        module.build_workspace("me", "orderopt", "x", [])


def test_saving_the_wandb_workspace_without_an_account_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--save needs a wandb login: one message naming `wandb login` and `wandb sync`, not wandb's traceback."""
    import importlib.util

    pytest.importorskip("wandb_workspaces")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location(
        "wandb_workspace", STUDIES.parent / "dashboards" / "wandb_workspace.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit, match="wandb login.*wandb sync"):
        module.main(["--entity", "me", "--study", "reference", "--studies-dir", str(STUDIES), "--save"])


def test_a_study_without_a_search_stars_its_best_measured_schedule_not_a_recommendation() -> None:
    """The stage plot and the leaderboard of a study of given schedules (no search.json) name what they show."""
    sections = {s.key: s for s in build_sections(STUDIES / "reference")}
    assert "★ the best measured schedule" in sections["leaderboard"].caption
    title = sections["stages"].figures[0].layout.title.text
    assert "the best measured schedule (solid) and joint training (dotted)" in title and "recommended" not in title


def test_a_study_of_two_base_models_is_refused_unless_one_is_named(tmp_path: Path) -> None:
    """Two suites trained under one study name (each suite warm-starts its own embedded model), or a dataset edited
    in place: loading every record is refused with what to do on the command line; named, one model's records are
    reported (orderopt-report names its config's model)."""
    from support import toy_record

    from orderopt.store import MixedModels, write_json_atomic

    ac = {"a": 0.4, "c": 0.6}
    other = toy_record(
        run_id="full-y-s0", model_id="tiny-y", model="/m/tiny-y", suite=["a", "c"], schedule_key="a:1>c:1",
        schedule={"stages": [{"tasks": ["a"], "steps": 1}, {"tasks": ["c"], "steps": 1}]},
        evals=[{"after": "base", "scores": ac, "entropy": {"a": 1.0, "c": 1.0}}] * 3, final=ac,
    )  # fmt: skip
    write_json_atomic(tmp_path / "runs" / "full-x-s0" / "result.json", toy_record())
    write_json_atomic(tmp_path / "runs" / "full-y-s0" / "result.json", other)
    with pytest.raises(MixedModels, match=r"come from 2 base models: .*give each suite or model a study of its own"):
        load_records(tmp_path)
    transfer = json.loads((STUDIES / "reference" / "transfer.json").read_text())
    write_json_atomic(tmp_path / "transfer.json", {**transfer, "model": "tiny-x"})  # the other model's probes
    with pytest.warns(RuntimeWarning, match="1 run records .* of another base model than tiny-y"):
        sections = build_sections(tmp_path, model="tiny-y")
    assert "transfer" not in {s.key for s in sections}
    with pytest.warns(RuntimeWarning, match="1 run records .* of another base model than tiny-x"):
        assert "transfer" in {s.key for s in build_sections(tmp_path, model="tiny-x")}  # its own probes' matrix
    with pytest.warns(RuntimeWarning, match="1 run records .* of another base model than tiny-y"):
        page = write_report(tmp_path, png=False, model="tiny-y").read_text()
    assert "a:1&gt;c:1" in page or "a:1>c:1" in page


def test_the_rank_correlation_of_few_schedules_claims_no_interval() -> None:
    from orderopt.report_page import _spearman_ci

    rho, lo, hi = _spearman_ci([0.70, 0.71, 0.72], [0.7600000000000001, 0.76, 0.80])  # a float-rounding tie
    assert rho == pytest.approx(0.866, abs=1e-3) and lo != lo and hi != hi  # no bootstrap of three schedules
    rho, lo, hi = _spearman_ci([1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 6, 5])
    assert lo < rho <= hi  # six schedules: an interval


@pytest.mark.parametrize("pairs", ["all", "some", "none"])
def test_the_transfer_graph_draws_what_the_probes_measured(pairs: str) -> None:
    """An arrow j → i is how training j after i moves i: the pair probe i→j where it ran, else how j's single-task
    probe moved i (``probe=single``, ``probe.pair_select=harm``), never left out nor turned around."""
    from orderopt.probe import TransferMatrix
    from orderopt.report_page import _transfer_section

    tm = TransferMatrix.from_dict(json.loads((STUDIES / "reference" / "transfer.json").read_text()))
    if pairs != "all":
        tm.pair[:, 1:] = float("nan")  # pair probes i→j of every j but arith (index 0) not run
        if pairs == "none":
            tm.pair[:] = float("nan")
    graph = _transfer_section(tm.to_dict()).figures[1]
    tasks = tm.tasks
    xy = {t: (x, y) for t, x, y in zip(graph.data[-1].text, graph.data[-1].x, graph.data[-1].y, strict=True)}
    drawn = {}
    for arrow in graph.layout.annotations:  # from (ax, ay) to (x, y), shifted off the centres: nearest nodes
        tail = min(tasks, key=lambda t: (xy[t][0] - arrow.ax) ** 2 + (xy[t][1] - arrow.ay) ** 2)
        head = min(tasks, key=lambda t: (xy[t][0] - arrow.x) ** 2 + (xy[t][1] - arrow.y) ** 2)
        drawn[(tail, head)] = arrow.opacity
    expected = {}
    for i, a in enumerate(tasks):
        for j, b in enumerate(tasks):
            measured = tm.bwt_matrix[i, j] if pairs == "all" or (pairs == "some" and j == 0) else None
            value = measured if measured is not None else tm.transfer[j, i]
            if i != j and abs(value) >= 0.01:
                expected[(b, a)] = 0.7 if measured is not None else 0.35
    assert drawn == expected and expected
    assert ("faint" in graph.layout.title.text) == (pairs == "some")


def test_a_merge_is_not_taken_for_the_curriculum_its_record_names() -> None:
    """A merge record's schedule key is the suite-order curriculum of its parts, trained as a run of its own in the
    reference study: the merge gets neither that curriculum's prediction nor its star as the recommendation."""
    import re

    from orderopt.predict import TransferPredictor
    from orderopt.report_page import _leaderboard_section, _predictions, _stages_section

    records = load_records(STUDIES / "reference")
    probes = [r for r in records if r["kind"] == "probe"]
    trained = [r for r in records if r["kind"] != "probe"]
    curriculum = "arith:200>strings:200>qa:200>names:200"
    assert {r.get("baseline") for r in trained if r["schedule_key"] == curriculum} == {None, "merge"}
    search = {"recommendation": curriculum}
    table = _leaderboard_section(trained, _predictions(probes, trained, TransferPredictor())[0], search).table
    rows = {re.sub("<.*?>", "|", row).strip("|").split("||")[0]: row for row in re.findall("<tr>(.*?)</tr>", table)}
    merge = rows["merge:arith:200&gt;strings:200&gt;qa:200&gt;names:200"]
    assert "<td>–</td>" in merge and "★" not in merge
    assert "★" in rows["arith:200&gt;strings:200&gt;qa:200&gt;names:200 ★"]
    lines = [trace.name for trace in _stages_section(trained, search).figures[0].data]
    assert not any("merge" in (name or "") for name in lines)


def test_the_report_predicts_with_the_study_s_own_predictor() -> None:
    """A study configured with another predictor (or other settings) is shown that one's predictions, named."""
    from orderopt.predict import AdditiveBWTPredictor, TransferPredictor

    def prediction(predictor: object) -> object:
        return next(s for s in build_sections(STUDIES / "reference", predictor=predictor) if s.key == "prediction")

    learned, additive = prediction(None), prediction(AdditiveBWTPredictor())
    assert "by the learned predictor fitted" in learned.caption and "by the additive predictor" in additive.caption
    assert list(learned.figures[0].data[0].x) != list(additive.figures[0].data[0].x)
    assert "(use_pairs=False)" in prediction(TransferPredictor(use_pairs=False)).caption
    # the learned predictor says what ρ its own uncertainty expected (joint draws); the additive one has none
    assert "the predictor expected ρ" in learned.caption and "expected ρ" not in additive.caption
    # five trained schedules (a search study): too few for the interval to say anything, so no verdict
    few = next(s for s in build_sections(STUDIES / "search-reference") if s.key == "prediction")
    assert "5 schedules trained" in few.caption and "expected ρ" not in few.caption


def test_the_learned_predictor_s_joint_draws_rank_alike_and_its_expected_rho_covers_the_reference() -> None:
    """Joint draws move every schedule together: two schedules far apart in prediction keep their order in (nearly)
    every draw, which independent draws within each std would not; the reference's measured ρ over its trained
    schedules (probes of seed 0 only) lies inside the predictor's own 90% interval."""
    import statistics

    import numpy as np

    from orderopt.predict import TransferPredictor, rank_correlation, ranking_interval
    from orderopt.records import measurements
    from orderopt.store import load_records

    records = load_records(STUDIES / "reference")
    probes = [r for r in records if r["kind"] == "probe" and r["seed"] == 0]
    model = TransferPredictor().fit(probes)
    runs: dict[str, list[float]] = {}
    for r in measurements(records):
        runs.setdefault(r["schedule_key"], []).append(r["mean_final"])
    keys = sorted(runs)
    draws = model.sample_mean(keys, n_samples=100)
    assert draws.shape == (100, len(keys)) and np.isfinite(draws).all()
    mean = model.predict_mean(keys)
    low, high = ranking_interval(model, keys)
    rho = rank_correlation(list(mean), [statistics.fmean(runs[k]) for k in keys])["spearman"]
    assert -1 <= low < high <= 1 and low <= rho <= high
    with pytest.raises(ValueError, match="n_boot=0"):
        TransferPredictor(n_boot=0).fit(probes).sample_mean(keys)
