"""Network, country/ASN, service and expiry rules (parsing, matching)."""
