"""Shared app state: the workspace and models as cached resources, progress bars, error display.

Heavy objects live in st.cache_resource (shared by sessions, read-only); everything a
user picks lives in st.session_state (per browser session). Results are read from cache/,
where a run only appears once it is complete, so sessions never see each other's
half-finished work.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import streamlit as st

from analysis.config import DataConfig, ModelConfig, TrainConfig
from analysis.errors import CureError
from analysis.evaluate import baseline_metrics
from analysis.model.recommender import Recommender, load_recommender
from analysis.model.train import train_recommender
from analysis.workspace import Workspace, open_workspace

DEFAULT_REQUEST = "users:0.1"


def settings() -> tuple[str | None, int, str | None]:
    return os.environ.get("CURE_DATA") or None, int(os.environ.get("CURE_HISTORY", "10")), \
        os.environ.get("CURE_CACHE") or None


def progress_bar(label: str):
    """A progress bar and the (stage, done, total) callback that moves it."""
    bar = st.progress(0.0, text=label)

    def progress(stage: str, done: int, total: int) -> None:
        if stage.startswith("waiting"):  # another session holds the lock: say so, keep the bar where it is
            bar.progress(0.0, text=f"{label}: {stage}")
            return
        bar.progress(min(1.0, done / max(total, 1)), text=f"{label}: {stage} {done}/{total}")

    return bar, progress


@st.cache_resource(show_spinner=False)
def _workspace(source: str | None, history: int, cache: str | None) -> Workspace:
    bar, progress = progress_bar("Preparing data (first launch only)")
    ws = open_workspace(DataConfig(source=source, history=history), root=cache, progress=progress)
    bar.empty()
    return ws


def workspace() -> Workspace:
    return _workspace(*settings())


@st.cache_resource(show_spinner=False)
def _original(_ws: Workspace, fingerprint: str) -> Recommender:  # the fingerprint keys the cache
    bar, progress = progress_bar("Training the default model (first launch only)")
    rec = train_recommender(_ws, None, ModelConfig(), TrainConfig(), progress=progress)
    bar.empty()
    return rec


def original() -> Recommender:
    ws = workspace()
    return _original(ws, ws.fingerprint)


@st.cache_resource(show_spinner=False)
def _bridge(_rec: Recommender, path: str):
    from analysis.circuits.trace import load_bridge

    return load_bridge(_rec)


def bridge(rec: Recommender):
    return _bridge(rec, str(rec.path))


@st.cache_resource(show_spinner=False)
def _saved_model(path: str, _ws: Workspace) -> Recommender:
    return load_recommender(path, _ws.data)


def saved_model(path: str) -> Recommender:
    return _saved_model(path, workspace())


@st.cache_data(show_spinner=False)
def baseline(_ws: Workspace, fingerprint: str) -> dict:
    return baseline_metrics(_ws)


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

    if "circuit_settings" not in st.session_state:
        st.session_state["circuit_settings"] = (
            CircuitSettings(n_prompts=int(os.environ.get("CURE_N_PROMPTS", CircuitSettings.n_prompts)),
                            stability_seeds=int(os.environ.get("CURE_STABILITY_SEEDS", CircuitSettings.stability_seeds))),
            GroupThresholds())
    return st.session_state["circuit_settings"]


def request() -> str:
    """The deletion request shared by the Circuits, Unlearning lab and Compare pages."""
    return st.session_state.setdefault("request", DEFAULT_REQUEST)


def selected_modules() -> list[str]:
    return st.session_state.setdefault("selected_modules", [])


def sync_graph_selection(session, chart_key: str, picker_key: str) -> list[str] | None:
    """A new selection on the circuit graph replaces the module picker's value.

    Runs before the picker is drawn (Streamlit forbids changing a drawn widget's state).
    Points carry their node name as customdata; input and logits are not modules.
    """
    event = session.get(chart_key) or {}
    points = event.get("selection", {}).get("points", []) if isinstance(event, dict) else []
    picked = sorted({p["customdata"] for p in points if isinstance(p.get("customdata"), str)} - {"input", "logits"})
    if not picked or picked == session.get("_last_graph_pick"):
        return None
    session["_last_graph_pick"] = picked
    session[picker_key] = picked
    return picked


def pick_stored(title: str, items: list[dict], id_key: str, label_of, wanted_state: str, key: str) -> dict:
    """A selectbox over stored results (runs, reports), opened on the one named in session_state[wanted_state]."""
    labels = {item[id_key]: label_of(item) for item in items}
    ids = list(labels)
    wanted = st.session_state.get(wanted_state)
    chosen = st.selectbox(title, ids, index=ids.index(wanted) if wanted in ids else 0, format_func=labels.get, key=key)
    return next(item for item in items if item[id_key] == chosen)
