"""The dataset report: statistics, pictures and the dataset card."""
