"""Entry point: `streamlit run streamlit_app.py`. All UI lives in app/."""
from app.main import main

main()
