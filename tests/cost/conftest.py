from ..budgets.conftest import collect_clients

__all__ = ["collect_clients"]
