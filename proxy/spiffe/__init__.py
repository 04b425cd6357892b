"""spiffe"""
