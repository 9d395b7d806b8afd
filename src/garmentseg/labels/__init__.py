"""Labels you can trust: the audit that ranks cutouts a model disputes, and the stewards' decisions on them."""
