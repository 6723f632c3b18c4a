"""The pictures of a run: training curves and the row-normalised confusion matrix (PNG, written atomically)."""
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import utils  # noqa: E402

SPLIT_COLOURS = {'train': 'tab:blue', 'valid': 'tab:green', 'test': 'tab:red'}


def training_curves(path, metrics, selected_epoch, selected_by):
    """curves.png: loss and weighted F1 per epoch of every split in metrics.csv, the selected epoch marked."""
    figure, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, colour in SPLIT_COLOURS.items():
        if f'{split}_loss' not in metrics:
            continue
        loss_ax.plot(metrics['epoch'], metrics[f'{split}_loss'], marker='.', color=colour, label=split)
        f1_ax.plot(metrics['epoch'], metrics[f'{split}_f1'], marker='.', color=colour, label=split)
    for ax, title in ((loss_ax, 'loss'), (f1_ax, 'weighted F1 (%)')):
        if selected_epoch is not None:
            ax.axvline(selected_epoch, color='grey', linestyle='--', linewidth=1,
                       label=f'selected: epoch {selected_epoch} ({selected_by})')
        ax.set_xlabel('epoch')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
    f1_ax.legend(fontsize=8)
    utils.save_figure(path, figure)


def confusion_picture(path, labels, preds, label_names, title):
    """confusion.png: the confusion matrix normalised per true class (rows sum to 1), counts in the cells."""
    counts = utils.confusion(labels, preds, len(label_names))
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = 1.2 + 0.55 * len(label_names)
    figure, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
    for i in range(len(label_names)):
        for j in range(len(label_names)):
            ax.text(j, i, f'{rates[i, j]:.2f}\n({counts[i, j]})', ha='center', va='center', fontsize=7,
                    color='white' if rates[i, j] > 0.5 else 'black')
    ticks = np.arange(len(label_names))
    ax.set_xticks(ticks, label_names, rotation=45, ha='right')
    ax.set_yticks(ticks, label_names)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(title, fontsize=9)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    utils.save_figure(path, figure)
