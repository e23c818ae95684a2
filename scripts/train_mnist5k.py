"""Measure the quality goals of the data-and-models issue on the built-in mnist-5k.

Trains the classifier and the autoencoder (n = 16) with the CLI defaults on a fixed number
of torch threads, sequentially, and prints one JSON line with test accuracy, test MSE and
wall-clock seconds (including reading the shards and evaluation). The numbers in
docs/models.md come from:

    python scripts/train_mnist5k.py --threads 2 --output /tmp/tig-mnist5k
"""

from __future__ import annotations

import argparse
import json
import os
import time

from tig_batch.data import resolve_dataset
from tig_batch.models import TrainConfig, save_checkpoint, train_autoencoder, train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="checkpoints")
    parser.add_argument("--classifier-epochs", type=int, default=10)
    parser.add_argument("--autoencoder-epochs", type=int, default=20)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    train = resolve_dataset("mnist-5k", "train")
    test = resolve_dataset("mnist-5k", "test")
    report: dict = {"threads": args.threads, "cpu_count": os.cpu_count()}

    start = time.perf_counter()
    config = TrainConfig(epochs=args.classifier_epochs, threads=args.threads)
    clf = train_classifier(train, test, config, progress=not args.quiet)
    save_checkpoint(os.path.join(args.output, "classifier"), clf.model, clf.metadata)
    report["classifier_seconds"] = round(time.perf_counter() - start, 1)
    report["classifier_test_accuracy"] = clf.metrics["test_accuracy"]

    start = time.perf_counter()
    config = TrainConfig(epochs=args.autoencoder_epochs, threads=args.threads)
    ae = train_autoencoder(train, test, config, latent_dim=16, progress=not args.quiet)
    save_checkpoint(os.path.join(args.output, "autoencoder"), ae.model, ae.metadata)
    report["autoencoder_seconds"] = round(time.perf_counter() - start, 1)
    report["autoencoder_test_mse"] = round(ae.metrics["test_mse"], 5)
    report["total_seconds"] = round(report["classifier_seconds"] + report["autoencoder_seconds"], 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
