"""Early-layer symmetries (arXiv 2104.08537): first-layer filter fits, stems of timm models, real pretrained filters, the filter analysis with its controls."""
