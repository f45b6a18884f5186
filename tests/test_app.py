"""The app's pages through Streamlit's AppTest, on a tiny slice of MovieLens with a tiny cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.data.forget import ForgetSpec
from app.state import sync_graph_selection
from support.datasets import write_ml100k_folder

APP = str(Path(__file__).parent.parent / "streamlit_app.py")


@pytest.fixture(scope="session")
def app_files(tiny_data, tmp_path_factory) -> dict[str, str]:
    """One tiny dataset folder and one cache for every app test: the default model trains once."""
    root = tmp_path_factory.mktemp("app")
    return {"CURE_DATA": str(write_ml100k_folder(tiny_data, root / "ml-100k-tiny")), "CURE_HISTORY": "5",
            "CURE_CACHE": str(root / "cache"), "CURE_N_PROMPTS": "8", "CURE_STABILITY_SEEDS": "2",
            "CURE_RETAIN_SAMPLES": "2"}


@pytest.fixture
def app_env(app_files, monkeypatch):
    for name, value in app_files.items():
        monkeypatch.setenv(name, value)
    return app_files


def open_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    if page:
        at.switch_page(f"app/pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def test_overview_shows_dataset_model_and_prompt(app_env):
    at = open_page()
    assert [h.value for h in at.subheader] == ["Dataset", "Model"]
    labels = {m.label: m.value for m in at.metric}
    assert labels["Users"] == "40" and labels["Layers x heads"] == "4 x 4"
    prompt = at.code[0].value
    assert "user" in prompt and "item_" not in prompt and "★" in prompt  # items by title, ratings as stars
    assert any("guided tour" in link.proto.label for link in at.get("page_link"))
    assert any("bias baseline" in c.value for c in at.caption)  # the ranking comparison is said, not hidden
    # which prompt this is, and why Trace's for the same user and movie can differ
    assert any("first test sample" in c.value and "Trace shows a user's *latest* history" in c.value
               for c in at.caption)


def test_trace_splits_the_score_and_shows_attention(app_env):
    at = open_page("trace")
    labels = {m.label for m in at.metric}
    assert {"Score (logit Yes - No)", "P(like)"} <= labels
    assert any(e.label.startswith("Prompt tokens: the user's latest history") for e in at.expander)
    assert len(at.get("plotly_chart")) == 2
    at.selectbox(key="trace_layer").select(1).run()
    at.selectbox(key="trace_head").select(2).run()
    assert not at.exception
    assert "a1.h2" in at.get("plotly_chart")[1].proto.spec


def test_overview_and_trace_on_the_same_user_and_movie_agree_or_say_why(app_env):
    """Token by token: Overview's example is the prompt evaluation scores for its sample; Trace, set to the
    same user and movie, shows the prompt ranking scores (its score is the top-k list's). Where the two
    prompts differ, both pages say which prompt they show."""
    from analysis.recommend import top_k
    from app import state

    overview = open_page()
    ws, rec = state.workspace(), state.original()
    sample = ws.interactions.split("test").iloc[0]
    user, item = int(sample["user_id"]), int(sample["item_id"])
    assert any(f"target {ws.title(item)}" in c.value for c in overview.caption)  # the example is this sample
    trace = open_page("trace")
    trace.selectbox(key="trace_user").set_value(user).run()
    trace.selectbox(key="trace_item").set_value(item).run()
    assert not trace.exception
    shown = {m.label: m.value for m in trace.metric}["Score (logit Yes - No)"]
    ranked = next(r for r in top_k(rec, ws, user, k=len(ws.interactions.item_ids), exclude_rated=False)
                  if r.item_id == item)
    assert float(shown) == pytest.approx(ranked.score, abs=6e-4)  # shown to 3 decimals
    trace_tokens, overview_tokens = trace.code[0].value.split(" | "), overview.code[0].value.split(" | ")
    assert all(ws.title(item) in " | ".join(t[-4:]) for t in (trace_tokens, overview_tokens))  # one candidate
    if trace_tokens != overview_tokens:
        assert any("first test sample" in c.value and "*latest* history" in c.value for c in overview.caption)
        assert any("Overview's example is a test sample's own prompt" in c.value for c in trace.caption)


def test_circuits_page_selection_reaches_the_lab_and_a_selective_run_completes(app_env):
    at = open_page("circuits")
    assert {m.label for m in at.metric} >= {"Circuit edges", "Recovery", "Spearman vs patching"}
    # graph, specificity scatter, intervals, faithfulness, stability
    assert len(at.get("plotly_chart")) == 5 and len(at.get("download_button")) == 2
    _circuits_page_states_its_groups_and_draws_its_rows(at)
    at.multiselect(key="module_picker").set_value(["a1.h0", "m1"]).run()
    assert at.session_state["selected_modules"] == ["a1.h0", "m1"]
    at.switch_page("app/pages/lab.py").run()
    at.selectbox(key="lab_method").select("selective").run()
    assert "a1.h0, m1" in at.info[0].value
    at.number_input(key="lab_steps").set_value(2).run()
    at.button(key="lab_run").click().run()
    assert not at.exception, at.exception
    assert "selective finished" in at.success[0].value
    assert len(at.dataframe) == 1  # the stored runs table
    at.switch_page("app/pages/compare.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="compare_pick").value == at.session_state["compare_run"]
    # per-user recognisability, conflict before / after / difference, and the Pareto view
    assert len(at.get("plotly_chart")) == 5
    titled = 0
    for chart in at.get("plotly_chart"):  # a conflict heatmap's title counts the cells it sits on
        spec = json.loads(chart.proto.spec)
        title = (spec["layout"].get("title") or {}).get("text", "")
        if title.startswith(("before: ", "after: ")):
            cells = [v for row in spec["data"][0]["z"] for v in row if v is not None]
            assert title.split(": ", 1)[1] == f"{sum(v < 0 for v in cells)} of {len(cells)} cells negative"
            titled += 1
    assert titled == 2
    assert [s.value for s in at.subheader][:2] == ["A forgotten user", "A retained user"]
    assert "How recognisable is each forgotten user?" in [s.value for s in at.subheader]
    assert {m.label for m in at.metric} >= {"Distance to retrain", "Gap closed (signed)", "Matched attack"}


def _circuits_page_states_its_groups_and_draws_its_rows(at: AppTest) -> None:
    """The sentences above the graph are the result's own, the rule line names the test, and the graph draws
    the most specific rows of each specific group on its input side (the rest behind "+N more rows")."""
    from analysis.circuits.describe import describe
    from analysis.circuits.discover import cached_circuits
    from app import circuit_view, state

    ws = state.workspace()
    settings, thresholds = at.session_state["circuit_settings"]
    result = cached_circuits(ws, state.original(), ws.forget_set(at.session_state["request"]), settings, thresholds)
    text = "\n".join(m.value for m in at.markdown)
    for summary in describe(result.node_groups):
        assert summary.sentence in text, (summary.sentence, text)
    assert "Benjamini-Hochberg over" in text and f"at least {thresholds.min_users} users" in text
    shown, rest = circuit_view.top_rows(result.view().nodes)
    spec = at.get("plotly_chart")[0].proto.spec  # the circuit graph
    drawn = {n for n in result.node_groups.names if n.startswith("row:") and f'"{n}"' in spec}
    assert drawn == {n.name for n in shown}  # exactly the top rows: none when no row is specific
    assert (f"+{rest} more rows" in spec) == (rest > 0) and (circuit_view.MORE_ROWS in spec) == (rest > 0)
    expander = next(e for e in at.expander if e.label.startswith("Item rows by group and specificity"))
    assert expander.proto.expanded is False  # opened only by selecting "+N more rows"


def test_lab_runs_cure_with_live_progress_and_compare_lists_it(app_env):
    at = open_page("lab")
    at.number_input(key="lab_steps").set_value(3).run()
    at.button(key="lab_run").click().run()
    assert not at.exception, at.exception
    assert "cure finished" in at.success[0].value
    curve = at.get("plotly_chart")  # the live per-step curve, with its axes named
    assert len(curve) == 1 and '"binary cross-entropy"' in curve[0].proto.spec and '"step"' in curve[0].proto.spec
    # the message: sentences with full stops, the over-forgetting note capitalised, the noise (or its absence) said
    assert ". See Compare." in at.success[0].value and "no study has measured the training-seed noise" in \
        at.success[0].value
    overall = next(p.proto for p in at.get("progress") if p.proto.text.startswith("cure on"))
    assert overall.value == 100 and "stage 4 of 4: evaluation" in overall.text  # retrain, circuits, steps, evaluation
    assert "unlearning" not in overall.text.partition("from cache:")[2]  # the steps ran: not "from cache"


def test_the_lab_shows_the_controls_its_method_takes(app_env):
    """The controls per method follow its spec (registry.MethodSpec.options), the choices run.py's."""
    from analysis.unlearn.registry import REGISTRY
    from analysis.unlearn.run import STOPS

    at = open_page("lab")
    for method, spec in REGISTRY.items():
        at.selectbox(key="lab_method").select(method.value).run()
        assert not at.exception, at.exception
        labels = {w.label for w in [*at.main.selectbox, *at.main.number_input]}  # not the sidebar's
        assert ("Retain-specific nodes" in labels) == spec.uses_circuits, method
        assert ("Salient share of parameters" in labels) == spec.uses_saliency, method
        assert ("Max steps (0: the epochs decide)" in labels) == spec.steps, method
        assert any("Selective unlearning updates only" in i.value for i in at.info) == ("modules" in spec.options)
        if spec.steps:
            assert tuple(at.selectbox(key="lab_stop").options) == STOPS
        else:
            assert labels == {"Method"}  # retrain reads none of the config


def test_a_run_waiting_on_another_sessions_lock_says_so_and_then_completes(app_env, monkeypatch):
    """Another session holds the run's real cache lock for 2 s: the lab waits, then builds it and says it waited."""
    import fcntl
    import threading

    import analysis.unlearn.lab as lab

    real, held = lab.run_key, []

    def key_held_elsewhere(ws, *args, **kwargs):
        key = real(ws, *args, **kwargs)
        (ws.root / "locks").mkdir(parents=True, exist_ok=True)
        fh = open(ws.root / "locks" / f"{lab.RUNS}-{key}.lock", "w")  # another open file: a real second holder
        fcntl.flock(fh, fcntl.LOCK_EX)
        held.append(key)
        threading.Timer(2.0, lambda: (fcntl.flock(fh, fcntl.LOCK_UN), fh.close())).start()
        return key

    monkeypatch.setattr(lab, "run_key", key_held_elsewhere)
    at = open_page("lab")
    at.number_input(key="lab_steps").set_value(4).run()
    at.button(key="lab_run").click().run()
    assert not at.exception, at.exception
    assert held and "cure finished" in at.success[0].value
    import re

    waited = re.search(r"Waited (\d+) s for another session's identical job", at.success[0].value)
    assert waited and int(waited.group(1)) >= 2


def test_a_bad_request_is_checked_as_entered_and_never_leaves_its_page(app_env):
    at = open_page("lab")
    good = at.session_state["request"]
    assert isinstance(good, ForgetSpec)  # parsed once, where it entered; pages pass the parsed request on
    good = str(good)
    at.text_input(key="lab_request").set_value("users:abc").run()
    assert not at.exception
    assert "expected a fraction of users" in at.error[0].value and f"Still showing '{good}'" in at.error[0].value
    assert at.button(key="lab_run").disabled and str(at.session_state["request"]) == good
    assert any(good in s.value for s in at.subheader)  # the runs of the last good request stay listed
    at.text_input(key="lab_request").set_value("genre:Polka").run()
    assert "unknown genre" in at.error[0].value
    at.switch_page("app/pages/circuits.py").run()  # the bad request did not follow
    assert not at.exception and at.text_input(key="circ_request").value == good and not at.error
    at.switch_page("app/pages/overview.py").run()
    assert not at.exception and at.metric


def test_guided_tour_walks_the_pages_and_states_the_cached_results(app_env):
    from analysis.circuits.discover import cached_circuits

    open_page("circuits")  # the request's circuits, cached
    at = open_page("tour")
    assert "Step 1 of 6" in at.get("progress")[0].proto.text
    for k in range(1, 6):
        at.button(key="tour_next").click().run()
        assert not at.exception and at.session_state["tour_step"] == k
        assert f"Step {k + 1} of 6" in at.get("progress")[0].proto.text
        if k == 2:  # the circuits step states the cached group sizes
            from app import state

            ws = state.workspace()
            settings, thresholds = at.session_state["circuit_settings"]
            sizes = cached_circuits(ws, state.original(), ws.forget_set(at.session_state["request"]), settings,
                                    thresholds).node_groups.sizes()
            text = " ".join(m.value for m in at.markdown)
            assert all(f"{n} {g}" in text for g, n in sizes.items()), text
    assert at.subheader[0].value == "6. The evidence"
    at.button(key="tour_prev").click().run()
    assert at.session_state["tour_step"] == 4


def test_graph_selection_events_fill_the_module_picker():
    session = {"chart": {"selection": {"points": [{"customdata": "a0.h1"}, {"customdata": "input"},
                                                  {"customdata": "m2"}, {"x": 1.0}]}}}
    assert sync_graph_selection(session, "chart", "picker") == ["a0.h1", "m2"]
    assert session["picker"] == ["a0.h1", "m2"]
    session["picker"] = ["m0"]  # the user edits the list; the same old selection must not overwrite it
    assert sync_graph_selection(session, "chart", "picker") is None and session["picker"] == ["m0"]
    assert sync_graph_selection({}, "chart", "picker") is None


def test_evidence_page_runs_a_quick_study_with_progress_and_shows_it(app_env, monkeypatch):
    from analysis.circuits.discover import CircuitSettings
    from analysis.study.grid import StudyConfig

    # one request throughout (the rates and levels sections reuse the Pareto cells): the page's plumbing is under
    # test here; every section's content is tests/test_study.py's
    tiny = StudyConfig(seeds=(0,), lrs=(0.003,), rates=("users:0.1",), levels=("users:0.1",), steps=2,
                       circuits=CircuitSettings(n_prompts=8, stability_seeds=2), training_seeds=1)  # as quick
    monkeypatch.setattr(StudyConfig, "quick", classmethod(lambda cls: tiny))  # the real quick grid takes minutes
    at = open_page("evidence")
    assert not at.exception, at.exception  # before any study: what the cache knows, and what a study costs here
    assert any(s.value.startswith("What the cache already knows about") for s in at.subheader)
    assert "No studies yet. A quick study" in at.info[0].value
    at.button(key="ev_run").click().run()
    assert not at.exception, at.exception
    assert "report.html" in at.success[0].value
    assert len(at.get("plotly_chart")) == 5  # Pareto, rates, levels, reproducibility, privacy
    # Pareto table, the ablation's arms and CURE's differences, transfer; one training seed: noise not measured
    assert len(at.dataframe) == 4 and len(at.get("download_button")) == 1
    arms = at.dataframe[1].value
    assert list(arms["arm"]) == ["npo", "npo+pcgrad", "npo+salun", "cure", "cure (random groups)"]
    assert any("Not measured: this study trained one seed" in c.value for c in at.caption)
    transfer = at.dataframe[3].value  # one draw and no second dataset: both transfer kinds say why they are skipped
    assert set(transfer["cure with"]) == {"skipped: needs at least two deletion draws (seeds)",
                                           "skipped: no second dataset given (cure study --transfer-data "
                                           "latest-small, or a local dataset folder)"}
    # Compare on the newest of the study's runs: study cells store no ranking agreement, the page computes it
    from analysis.unlearn.lab import list_runs

    assert list_runs(Path(app_env["CURE_CACHE"]))[0].comparison.ranking_agreement is None
    compare = open_page("compare")
    kept = [c.value for c in compare.caption if c.value.startswith("Top-10 kept (share of items): forget users ")]
    assert kept and "forget users n/a" not in kept[0], kept
