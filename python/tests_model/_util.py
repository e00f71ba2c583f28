import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))


def have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:
        return False
