"""app.py as `streamlit run app.py` imports it (for its st.App) before any browser connects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FIRST_SESSION = """
import app  # what `streamlit run app.py` does at start, to find the st.App
from streamlit.runtime.pages_manager import PagesManager
PagesManager(str(app.__file__))  # what the first browser session makes
print(PagesManager.uses_pages_directory)
"""


def test_the_server_never_starts_in_streamlits_pages_folder_mode() -> None:
    """With a `pages/` folder beside app.py, Streamlit runs its first sessions in its legacy
    folder mode until some session's app.py calls st.navigation: a page then ran alone and
    bounced through app.py, and a teacher's reload of /arena just after an app restart landed
    on Chat (the class e2e test, once in CI, once in 12 restarts here). The mode is off before
    the first session exists."""
    out = subprocess.run([sys.executable, "-c", FIRST_SESSION], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr
