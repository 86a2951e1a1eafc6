"""The embedded default's models and data, shipped inside PyPI packages: SmolLM2-135M-Instruct converted
from its GGUF (``assets``), all-MiniLM-L6-v2, and CHAMP as a BRIGHT-style split (``champ``) with its
problem-concept training set (``champ_training``)."""
