"""Client IP resolution, country lookup, tenant geo-fences and travel anomalies."""
