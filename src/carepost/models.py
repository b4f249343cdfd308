"""Every capability's tables, gathered so Alembic sees one metadata."""

from carepost.account import models as _account_models  # noqa: F401
from carepost.api import models as _api_models  # noqa: F401
from carepost.audit import models as _audit_models  # noqa: F401
from carepost.bounces import models as _bounce_models  # noqa: F401
from carepost.campaigns import models as _campaign_models  # noqa: F401
from carepost.consent import models as _consent_models  # noqa: F401
from carepost.contacts import models as _contact_models  # noqa: F401
from carepost.content import models as _content_models  # noqa: F401
from carepost.db import Base
from carepost.delivery import models as _delivery_models  # noqa: F401
from carepost.journeys import models as _journey_models  # noqa: F401
from carepost.messages import models as _message_models  # noqa: F401
from carepost.portal import models as _portal_models  # noqa: F401
from carepost.segments import models as _segment_models  # noqa: F401
from carepost.staff import models as _staff_models  # noqa: F401
from carepost.tracking import models as _tracking_models  # noqa: F401

metadata = Base.metadata
