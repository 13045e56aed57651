"""Pictures: mask galleries, regularisation profiles, training curves, reliability diagrams."""
