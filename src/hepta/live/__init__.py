"""Live knowledge: post sources, store, trends, opinion, accounts and search. Imports no torch."""
