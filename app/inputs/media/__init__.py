"""Media items: data URIs and image formats checked, URLs fetched safely and inlined (media_fetch)."""
