"""What a run shows: its plots, the t-SNE figures, the conversation viewer, and --overhead's cost measure."""
