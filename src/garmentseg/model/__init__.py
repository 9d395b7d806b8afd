"""The seed's U-Nets (simple, basic, Carvana), their loss, and full-resolution mask metrics."""
