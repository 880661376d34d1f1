"""Explanations of model predictions: Captum attributions and their HTML / PNG renderings."""
