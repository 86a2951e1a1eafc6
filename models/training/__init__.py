"""Tevatron-compatible contrastive retriever training on ``transformers.Trainer`` + PEFT + DeepSpeed.

One job per module (STYLE §1.1): ``arguments`` declares options, ``dataset`` samples groups of texts,
``collator`` tokenises and pads, ``loss`` holds InfoNCE and the cross-device gather, ``model`` the bi-encoder
with LoRA and pooling, ``trainer`` the loss plumbing and saving, ``inference_settings`` the
``retriever_config.json`` contract, ``run_setup`` the driver plumbing. ``champ_training`` builds the
embedded CHAMP training set. The driver is ``python -m run_src.train_retriever``.
"""
