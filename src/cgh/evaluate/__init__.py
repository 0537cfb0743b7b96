"""Evaluation: functions over extracted features (features, knn, linear, semisup, cluster, tsne, plot; classify holds
what the linear probe and the fine-tuning share). The commands on top of them are in cgh.commands."""
