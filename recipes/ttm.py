"""Train the text-to-music DiT: ``recipes/tta.py`` under its other name (the configs under
``recipes/configs/ttm`` set ``task: ttm``, the music instruction, prompts and data).

    accelerate launch recipes/ttm.py --config recipes/configs/ttm/paper.yaml \\
        data.train=musiccaps/train.jsonl model.tokenizer=TOKENIZER_DIR [dotted.key=value ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tta import main  # noqa: E402

from dashflow.cli import run_guarded  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_guarded(main))
