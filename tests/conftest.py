import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (tiny_llm, denoise_synth)
