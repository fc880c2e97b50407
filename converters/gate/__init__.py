"""Is the artifact still the model: validate.py (fidelity against fp32, thresholds per recipe),
metrics.py, text_gate.py (the real-text LM gate), calibration.py (feeds), recipe_auto.py
(``--recipe auto``: the fastest candidate that passes)."""
