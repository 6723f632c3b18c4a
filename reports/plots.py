"""The pictures of a run: training curves and the row-normalised confusion matrix (PNG, written atomically)."""
import numpy as np

import utils

SPLIT_COLOURS = {'train': 'tab:blue', 'valid': 'tab:green', 'test': 'tab:red'}


def pyplot():
    """matplotlib.pyplot without a display, imported on first use (half a second that a run's start need not wait)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def training_curves(path, metrics, selected_epoch, selected_by):
    """curves.png: loss and weighted F1 per epoch of every split in metrics.csv, the selected epoch marked."""
    from matplotlib.ticker import MaxNLocator
    figure, (loss_ax, f1_ax) = pyplot().subplots(1, 2, figsize=(10, 3.8))
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
    figure, ax = pyplot().subplots(figsize=(size + 1.2, size))
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


# ----------------------------------------------------------------------------- experiments.py's summary.png

F1_LABEL = 'test weighted F1 (%)'


def experiment_bars(path, stats, metrics, title, paper=None):
    """summary.png of a table: per row one bar per metric (its mean over seeds) with sample-std error bars.

    stats: one row per table row, columns n, <metric>_mean, <metric>_std; metrics: column -> label.
    """
    x = np.arange(len(stats))
    width = 0.8 / len(metrics)
    figure, ax = pyplot().subplots(figsize=(max(6.0, 0.35 * len(stats) * len(metrics) + 2.5), 4.2))
    for i, (metric, label) in enumerate(metrics.items()):
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, stats[f'{metric}_mean'], width,
               yerr=stats[f'{metric}_std'].fillna(0), capsize=3, label=label)
    if paper is not None:
        ax.axhline(paper, color='black', linestyle=':', linewidth=1,
                   label=f'the paper: full model, real data, one run: {paper:.2f}')
    low = np.nanmin((stats[[f'{m}_mean' for m in metrics]].to_numpy(float)
                     - stats[[f'{m}_std' for m in metrics]].fillna(0).to_numpy(float)), initial=100)
    ax.set_ylim(bottom=max(0.0, np.floor(min(low, paper or 100) / 5) * 5 - 5))
    ax.set_xticks(x, stats.index, rotation=30, ha='right')
    ax.set_ylabel(F1_LABEL)
    ax.set_title(title, fontsize=9)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8, title='epoch picked by', title_fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
    utils.save_figure(path, figure)


def experiment_sweeps(path, stats, lines, metrics, title, reference=None):
    """summary.png of a sweep: a panel per metric, a line per swept flag (means over seeds, ± sample-std band).

    lines: flag -> [(value, row of stats)]; reference: the row of the paper's configuration, drawn dashed.
    """
    figure, axes = pyplot().subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4), squeeze=False)
    for ax, (metric, label) in zip(axes[0], metrics.items()):
        for flag, points in lines.items():
            values, rows = [value for value, _ in points], [row for _, row in points]
            mean = stats.loc[rows, f'{metric}_mean'].to_numpy(float)
            std = stats.loc[rows, f'{metric}_std'].fillna(0).to_numpy(float)
            ax.plot(values, mean, marker='o', label=flag)
            ax.fill_between(values, mean - std, mean + std, alpha=0.2)
        if reference is not None:
            ax.axhline(stats.loc[reference, f'{metric}_mean'], color='grey', linestyle='--', linewidth=1,
                       label="the paper's configuration")
        ax.set_xlabel('value')
        ax.set_ylabel(F1_LABEL)
        ax.set_title(f'epoch picked by: {label}', fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    utils.save_figure(path, figure)
