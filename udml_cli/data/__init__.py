"""Datasets: registry, layouts and checks, converters, image datasets, transforms, samplers."""
