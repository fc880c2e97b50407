"""Training scripts for the prebuilt models (seeded, CPU, data from packages or synthesized).

``python -m converters.zoo.text|image|audio`` trains one model into ``artifacts/``;
``python -m converters.zoo.build`` converts them into the bundles shipped with edge-aigc.
"""
