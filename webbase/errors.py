"""The base of every refusal a Sluice service raises (designer.services, monitor.runs, ...)."""


class ServiceError(Exception):
    """Base of the services' refusals; `str(error)` is a message fit to show a user.

    `status_code` and `code` are what the REST API answers with (webbase.api.exception_handler);
    a subclass sets its own (404 for a missing version, 503 when Kafka did not acknowledge...).
    `body()` adds fields to the API's error body.
    """

    status_code = 409
    code = "conflict"

    def body(self) -> dict:
        return {}
