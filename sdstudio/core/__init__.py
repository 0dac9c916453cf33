"""The document model: images, masks, requests, geometry, metadata. Imports neither Qt nor torch."""
