"""The project's prompt files (one text file per purpose), shipped as package data.

Read them through :func:`models.llm.prompt_templates.load_prompt`; ``PROMPTS_DIR`` is where they live,
in a checkout and in an installed wheel alike.
"""

from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent
