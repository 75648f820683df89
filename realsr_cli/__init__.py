"""realsr: upscale real-world photos x4 with models trained by unsupervised domain adaptation.

The public API is re-exported lazily so that `import realsr_cli` stays cheap and never imports torch.
"""

__version__ = "0.1.0"
