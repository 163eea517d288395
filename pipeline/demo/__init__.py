"""The main job: every service on the embedded broker with the bundled sample sessions."""

from pathlib import Path

#: The bundled sample sessions (``manifest.json`` + WAVs); shipped inside the package.
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
