"""Layer ``ml``: the network. The model, ensembles of models, their training and evaluation, the
predictor (``sfh_pipeline.load_predictor``) and the model cards of shipped models. The only
layer whose modules import torch at module level; this file imports nothing, so that
``sfh_pipeline.ml.predict`` can load torch only when a predictor is made."""
