"""CURE Explorer's Streamlit app: navigation over the pages in app/pages (UI only, no model math)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "pages"
TITLES = {  # file -> (title, icon); the order is the order of the tour
    "overview.py": ("Overview", ":material/home:"),
    "trace.py": ("Trace", ":material/timeline:"),
    "circuits.py": ("Circuits", ":material/hub:"),
    "lab.py": ("Unlearning lab", ":material/science:"),
    "compare.py": ("Compare", ":material/compare_arrows:"),
    "evidence.py": ("Evidence", ":material/fact_check:"),
    "tour.py": ("Guided tour", ":material/school:"),
}


def main() -> None:
    # the tab's icon set here: left to the pages, Streamlit makes the current page's :material/...: icon the
    # favicon and fetches it from fonts.gstatic.com on every page (a classroom may be offline); an emoji is
    # drawn locally as an inline SVG
    st.set_page_config(page_title="CURE Explorer", page_icon="🧠", layout="wide")
    pages = [st.Page(PAGES / name, title=title, icon=icon, default=(name == "overview.py"))
             for name, (title, icon) in TITLES.items()]
    nav = st.navigation(pages)
    from app.state import compute_picker, dataset_picker

    dataset_picker()
    compute = compute_picker()
    st.sidebar.caption("CURE Explorer: how an LLM-based recommender forgets. Circuits, selective unlearning, "
                       "before and after.")
    with compute.active():  # this session's device and precision, for everything the page computes
        nav.run()
