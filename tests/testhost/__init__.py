"""Throwaway systemd test hosts (systemd-nspawn) for converge tests."""
