"""Evaluation: functions over extracted features (kNN, linear probe, semi-supervised, clustering, t-SNE, curves)."""
