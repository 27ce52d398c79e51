"""The fleet co-optimization: constraint families over a vectorized linear model, solved by HiGHS."""
