"""Shared app state: the workspace and models as cached resources, session keys, error display (a job's
progress bar and Cancel button: job_progress.py).

Heavy objects live in st.cache_resource (shared by sessions, read-only); everything a
user picks lives in st.session_state (per browser session). Results are read from cache/,
where a run only appears once it is complete, so sessions never see each other's
half-finished work.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from contextlib import contextmanager
from typing import Iterator

import streamlit as st

from analysis.config import DEFAULT_REQUEST, DataConfig, ModelConfig, TrainConfig
from analysis.data.forget import ForgetSpec, parse_forget_spec
from analysis.errors import CureError
from analysis.model.evaluate import Scorecard, baseline_metrics
from analysis.model.recommender import Recommender, load_recommender
from analysis.model.train import train_recommender
from analysis.unlearn.record import RankingAgreement
from analysis.watched import run_watched
from analysis.workspace import Workspace, open_workspace
from app import job_progress



DATASETS = {"ml-100k": "MovieLens-100K (1998, whole stars, user attributes)",
            "latest-small": "MovieLens latest-small (2016, half stars, no user attributes)"}


class SessionKey(Enum):
    """The session_state keys that outlive one page: written on one page and read on another, or reset from the
    sidebar. Pages reach them only through this module's accessors (never st.session_state[...]), and the dataset
    switch resets the per-dataset ones from this one list. A widget key used on one page alone stays that page's
    `key=`. The names are unchanged (the app tests read some of them)."""

    # (name, per_dataset: it names this dataset's requests, nodes or runs, so a new dataset drops it)
    REQUEST = ("request", True)  # the deletion request every page shares
    SELECTED_MODULES = ("selected_modules", True)  # picked on Circuits; the lab's selective run and the tour read it
    COMPARE_RUN = ("compare_run", True)  # the run the lab just made: Compare opens on it
    CIRCUIT_SETTINGS = ("circuit_settings", False)  # set on Circuits, asked for by the lab and the tour
    TOUR_STEP = ("tour_step", False)
    EVIDENCE_PICK = ("evidence_pick", False)  # the study just run: Evidence's picker opens on it
    # the Circuits page's own pickers, seeded from SELECTED_MODULES: reset here, so declared here
    MODULE_PICKER = ("module_picker", True)
    ROW_PICKER = ("row_picker", True)
    UNIT_PICKER = ("unit_picker", True)
    # the graph selection already copied into the pickers (sync_graph_selection). Kept across a dataset switch: a
    # graph selection the chart still reports would otherwise be copied again, naming the old dataset's nodes
    LAST_GRAPH_PICK = ("_last_graph_pick", False)

    def __init__(self, key: str, per_dataset: bool) -> None:
        self.key, self.per_dataset = key, per_dataset


def settings() -> tuple[str | None, int, str | None]:
    """(data source, history, cache): $CURE_DATA when set (a folder), else the session's dataset pick."""
    source = os.environ.get("CURE_DATA") or st.session_state.get("dataset") or None
    return source, int(os.environ.get("CURE_HISTORY", "10")), os.environ.get("CURE_CACHE") or None


def compute_settings():
    """This session's device and precision (sidebar), defaulting to $CURE_DEVICE / $CURE_DTYPE (auto, float32)."""
    from analysis.compute import resolve

    device = st.session_state.get("device") or os.environ.get("CURE_DEVICE", "auto")
    dtype = st.session_state.get("dtype") or os.environ.get("CURE_DTYPE", "float32")
    try:
        return resolve(device, dtype)
    except CureError as exc:
        st.sidebar.error(f"{exc}; using the CPU in float32")
        return resolve("cpu", "float32")


def compute_picker():
    """The sidebar's device and precision; returns the resolved choice (models are cached per choice)."""
    from analysis.compute import DTYPES, available_devices

    chosen = compute_settings()
    with st.sidebar.expander(f"Compute: {chosen.describe()}"):
        devices = available_devices()
        st.selectbox("Device", devices, index=devices.index(chosen.device) if chosen.device in devices else 0,
                     key="device", help="Where models are trained, traced and unlearned. Results in float32 are "
                                        "shared across devices; other precisions are cached separately.")
        st.selectbox("Precision", list(DTYPES), index=list(DTYPES).index(chosen.dtype), key="dtype",
                     help="bfloat16 and float16 halve memory on a GPU and change results slightly.")
    return compute_settings()


def dataset_picker() -> None:
    """The sidebar's dataset choice (named sources; a $CURE_DATA folder is shown instead)."""
    if os.environ.get("CURE_DATA"):
        st.sidebar.caption(f"Data: {os.environ['CURE_DATA']}")
        return
    names = list(DATASETS)
    st.sidebar.selectbox("Dataset", names, format_func=DATASETS.get, key="dataset", on_change=_new_dataset,
                         help="The default model is trained on first use of a dataset (with progress shown); "
                              "every result is cached per dataset.")


def _new_dataset() -> None:
    """Another dataset: its genres, items and nodes differ, so the request and picks start afresh."""
    for key in SessionKey:
        if key.per_dataset:
            st.session_state.pop(key.key, None)


def progress_bar(label: str):
    """A progress bar and the (stage, done, total) callback that moves it."""
    bar = st.progress(0.0, text=label)

    def progress(stage: str, done: int, total: int) -> None:
        if stage.startswith("waiting"):  # another session holds the lock: say so, keep the bar where it is
            bar.progress(0.0, text=f"{label}: {stage}")
            return
        bar.progress(min(1.0, done / max(total, 1)), text=f"{label}: {stage} {done}/{total}")

    return bar, progress


@dataclass(frozen=True)
class AppLimits:
    """What one browser session may ask of a machine shared by a class (the CLI keeps no limits).

    They keep one session from holding the job queue for long: at the limits a CURE run takes a few
    minutes on 2 cores, a circuit discovery about as long, and a quick study ~15 min. Each session runs
    one job at a time (a Streamlit session runs one script), so its queue length is 1.
    """

    steps: int = 2000
    epochs: float = 5.0
    prompts: int = 512
    stability_seeds: int = 3
    study: str = "quick"
    queue_per_session: int = 1

    def note(self, what: str) -> str:
        return f"Limit here: {what} (a shared server's bound; the CLI has none)."


LIMITS = AppLimits()


@st.cache_resource(show_spinner=False)
def _workspace(source: str | None, history: int, cache: str | None) -> Workspace:
    bar, progress = progress_bar("Preparing data (first launch only)")
    ws = open_workspace(DataConfig(source=source, history=history), root=cache, progress=progress)
    bar.empty()
    return ws


def workspace() -> Workspace:
    return _workspace(*settings())


@st.cache_resource(show_spinner=False)
def _original(_ws: Workspace, fingerprint: str, compute: str) -> Recommender:  # fingerprint, compute key the cache
    box, progress = job_progress.staged_progress("train", "Training the default model (first launch only)", _ws.root)
    rec = run_watched(lambda p: train_recommender(_ws, None, ModelConfig(), TrainConfig(), progress=p), progress)
    progress.finish()
    box.empty()
    return rec


def original() -> Recommender:
    ws = workspace()
    return _original(ws, ws.fingerprint, _compute())


@st.cache_resource(show_spinner=False)
def _bridge(_rec: Recommender, path: str, compute: str):
    from analysis.circuits.trace import load_bridge

    return load_bridge(_rec)


def bridge(rec: Recommender):
    return _bridge(rec, str(rec.path), _compute())


@st.cache_resource(show_spinner=False)
def _saved_model(path: str, _ws: Workspace, compute: str) -> Recommender:
    return load_recommender(path, _ws.data)


def saved_model(path: str) -> Recommender:
    return _saved_model(path, workspace(), _compute())


def ranking_agreement(run_dir: str, run: Recommender, original: Recommender, forget) -> RankingAgreement:
    """compare.ranking_agreement of a stored run, once per run and session (a study's runs store none)."""
    return _ranking_agreement(run_dir, run, original, forget, workspace())


@st.cache_data(show_spinner="Ranking the ranking users' movies with this run (a study's runs skip it) ...")
def _ranking_agreement(run_dir: str, _run: Recommender, _original: Recommender, _forget,
                       _ws: Workspace) -> RankingAgreement:
    from analysis.unlearn import compare

    return compare.ranking_agreement(_run, _original, _ws, _forget)


def _compute() -> str:
    """The active compute of this script run (set by app.main), as a cache key for models on a device."""
    from analysis.compute import current

    return current().describe()


@st.cache_data(show_spinner=False)
def baseline(_ws: Workspace, fingerprint: str) -> Scorecard:
    return Scorecard.of(baseline_metrics(_ws))


@contextmanager
def readable_errors() -> Iterator[None]:
    """analysis/ errors become a message on the page; the app keeps running."""
    try:
        yield
    except CureError as exc:
        st.error(str(exc))
    except ValueError as exc:  # bad widget combinations that analysis rejects
        st.error(f"Invalid input: {exc}")


def circuit_settings():
    """The circuit settings of this session: the last ones picked on the Circuits page, else the defaults.

    Stored under a plain key (widget state is dropped when its page is not shown), so the
    lab always asks for the same circuits the Circuits page computed and hits the cache.
    """
    from analysis.circuits.discover import CircuitSettings
    from analysis.circuits.groups import GroupThresholds

    key = SessionKey.CIRCUIT_SETTINGS.key
    if key not in st.session_state:
        st.session_state[key] = (CircuitSettings.from_env(), GroupThresholds())
    return st.session_state[key]


def set_circuit_settings(settings, thresholds) -> tuple:
    """The Circuits page's sidebar choice, for every page after it; returns (settings, thresholds)."""
    st.session_state[SessionKey.CIRCUIT_SETTINGS.key] = (settings, thresholds)
    return st.session_state[SessionKey.CIRCUIT_SETTINGS.key]


def request() -> ForgetSpec:
    """The deletion request shared by the Circuits, Unlearning lab and Compare pages, parsed once where it was
    entered (request_input); str() of it is the canonical text."""
    return st.session_state.setdefault(SessionKey.REQUEST.key, parse_forget_spec(DEFAULT_REQUEST))


REQUEST_HELP = "users:0.1 · users:12,40 · interactions:0.05 · genre:Horror · genre:Horror@users:1,2"


def request_input(key: str) -> tuple[ForgetSpec, bool]:
    """The deletion-request box every page shares, parsed and checked as it is entered.

    Returns (the request to use, whether the typed one was valid). A bad request is shown as
    an error on its own page and never stored: every other page keeps the last good one.
    """
    current = request()
    typed = st.text_input("Deletion request", str(current), key=key, help=REQUEST_HELP).strip()
    if typed == str(current):
        return current, True
    try:
        parsed = parse_forget_spec(typed)
        workspace().forget_set(parsed)  # selects nothing or everything: said here, never stored
    except CureError as exc:
        st.error(f"{exc}. Still showing '{current}'.")
        return current, False
    st.session_state[SessionKey.REQUEST.key] = parsed
    return parsed, True


def selected_modules() -> list[str]:
    return st.session_state.setdefault(SessionKey.SELECTED_MODULES.key, [])


def set_selected_modules(names: list[str]) -> None:
    """The nodes picked on the Circuits page: what the lab's selective method updates."""
    st.session_state[SessionKey.SELECTED_MODULES.key] = list(names)


def picker(key: SessionKey, default: list[str]) -> str:
    """The widget key of one of the Circuits page's pickers, its value first set to `default` (a rerun or the
    graph selection keeps what is there; a new dataset drops it)."""
    st.session_state.setdefault(key.key, default)
    return key.key


def set_compare_run(run_dir: str) -> None:
    """The run Compare opens on next (the lab sets it to the run it just made)."""
    st.session_state[SessionKey.COMPARE_RUN.key] = run_dir


def set_evidence_pick(path: str) -> None:
    """The study report Evidence's picker opens on (the quick study just run)."""
    st.session_state[SessionKey.EVIDENCE_PICK.key] = path


def tour_step() -> int:
    return st.session_state.setdefault(SessionKey.TOUR_STEP.key, 0)


def set_tour_step(step: int) -> None:
    st.session_state[SessionKey.TOUR_STEP.key] = step


def graph_selection(session, chart_key: str) -> set[str]:
    """The node names (customdata) of the points selected on the circuit graph now."""
    event = session.get(chart_key) or {}
    points = event.get("selection", {}).get("points", []) if isinstance(event, dict) else []
    return {p["customdata"] for p in points if isinstance(p.get("customdata"), str)}


def sync_graph_selection(session, chart_key: str, picker_key: str, row_key: str | None = None,
                         ignore: tuple[str, ...] = ()) -> list[str] | None:
    """A new selection on the circuit graph replaces the module picker's value; with `row_key`, the item
    rows in it (names "row:<id>") are added to that picker instead (rows are mostly picked by title from
    hundreds, so a click on the graph must not drop them).

    Runs before the pickers are drawn (Streamlit forbids changing a drawn widget's state).
    Points carry their node name as customdata; input, logits and `ignore` are not modules.
    """
    picked = sorted(graph_selection(session, chart_key) - {"input", "logits", *ignore})
    if not picked or picked == session.get(SessionKey.LAST_GRAPH_PICK.key):
        return None
    session[SessionKey.LAST_GRAPH_PICK.key] = picked
    rows = [n for n in picked if row_key and n.startswith("row:")]
    modules = [n for n in picked if n not in rows]
    if modules:
        session[picker_key] = modules
    if rows:
        kept = list(session.get(row_key) or [])
        session[row_key] = kept + [n for n in rows if n not in kept]
    return picked


def pick_stored(title: str, items: list, id_of, label_of, wanted_key: SessionKey, key: str):
    """A selectbox over stored results (runs, reports), opened on the one the session holds under `wanted_key`."""
    labels = {id_of(item): label_of(item) for item in items}
    ids = list(labels)
    wanted = st.session_state.get(wanted_key.key)
    chosen = st.selectbox(title, ids, index=ids.index(wanted) if wanted in ids else 0, format_func=labels.get, key=key)
    return next(item for item in items if id_of(item) == chosen)
