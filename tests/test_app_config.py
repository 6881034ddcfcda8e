"""The app server's settings in .streamlit/config.toml (issue 14, section 4).

Oracle: the parsed TOML. Uploads are private recordings, so the server
listens on the loopback interface only unless the user asks otherwise.
"""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_app_binds_to_localhost_by_default():
    """Oracle: server.address is 'localhost' (before: unset, so Streamlit listened on every interface)."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
