"""Small hand-written messages, one per shape the classifier must tell apart."""

from __future__ import annotations


def dsn(recipients: str, subject: str = "Undelivered Mail Returned to Sender") -> bytes:
    return f"""From: MAILER-DAEMON@mx.clinic.example (Mail Delivery System)
To: news@clinic.example
Subject: {subject}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

This is the mail system at host mx.clinic.example.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.clinic.example

{recipients}
--B1
Content-Type: text/rfc822-headers

From: news@clinic.example
To: someone@patients.example
Subject: Your appointment

--B1--
""".encode()


MIXED = dsn(
    """Final-Recipient: rfc822; gone@patients.example
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <gone@patients.example>: Recipient address rejected

Final-Recipient: rfc822; full@patients.example
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 Mailbox full
"""
)

DELAYED = dsn(
    """Final-Recipient: rfc822; slow@patients.example
Action: delayed
Status: 4.4.1
Diagnostic-Code: smtp; 421 4.4.1 Connection timed out
""",
    subject="Delayed Mail (still being retried)",
)

DELIVERED = dsn(
    """Final-Recipient: rfc822; ok@patients.example
Action: delivered
Status: 2.0.0
Diagnostic-Code: smtp; 250 2.0.0 Ok: queued
""",
    subject="Successful Mail Delivery Report",
)

POLICY = dsn(
    """Final-Recipient: rfc822; fine@patients.example
Action: failed
Status: 5.7.1
Diagnostic-Code: smtp; 550 5.7.1 Message rejected due to the sending IP's poor reputation
"""
)

GENERIC_STATUS_FULL = dsn(
    """Final-Recipient: rfc822; stuffed@patients.example
Action: failed
Status: 5.0.0
Diagnostic-Code: X-Postfix; mailbox is full: over quota
"""
)

ARF = b"""From: feedback@isp.example
To: abuse@clinic.example
Subject: FW: Your appointment
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F1"

--F1
Content-Type: text/plain

This is an email abuse report.

--F1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Rcpt-To: <annoyed@patients.example>

--F1
Content-Type: message/rfc822

From: news@clinic.example
To: annoyed@patients.example
Subject: Your appointment

Hello.
--F1--
"""

AUTO_REPLY = b"""From: doctor@patients.example
To: news@clinic.example
Subject: Out of Office: Your appointment
Auto-Submitted: auto-replied

I am away until Monday.
"""

QMAIL = b"""From: MAILER-DAEMON@mail.patients.example
To: news@clinic.example
Subject: failure notice

Hi. This is the qmail-send program at mail.patients.example.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<nobody@patients.example>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

From: news@clinic.example
To: nobody@patients.example
Subject: Your appointment

Hello, your results are ready.
"""

NOT_A_BOUNCE = b"""From: Pat <pat@patients.example>
To: news@clinic.example
Subject: Question about my appointment

Can I move it to Tuesday? My address is pat@patients.example.
"""

EXIM_PROSE = b"""From: Mail Delivery System <Mailer-Daemon@mx.clinic.example>
To: news@clinic.example
Subject: Mail delivery failed: returning message to sender
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  someone@patients.example
    host mx.patients.example [192.0.2.1]
    SMTP error from remote mail server after RCPT TO:<someone@patients.example>:
    550 5.1.1 <someone@patients.example>: Recipient address rejected: User unknown

------ This is a copy of the message, including all the headers. ------
From: news@clinic.example
To: someone@patients.example
"""
GMAIL_PROSE = b"""From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: news@clinic.example
Subject: Delivery Status Notification (Failure)

Delivery to the following recipient failed permanently:

     nobody@patients.example

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for
the recipient domain patients.example by mx.patients.example. [192.0.2.1].

The error that the other server returned was:
550 5.2.2 The email account that you tried to reach is over quota.
"""
EXCHANGE_PROSE = b"""From: postmaster@patients.example
To: news@clinic.example
Subject: Undeliverable: Your appointment
Content-Type: text/plain

Delivery has failed to these recipients or groups:

pat@patients.example
The e-mail address you entered couldn't be found.
Please check the recipient's e-mail address and try to resend the message.

Diagnostic information for administrators:
Generating server: mail.patients.example
pat@patients.example
#550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup ##
"""
