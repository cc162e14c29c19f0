"""moto's S3 server with AWS's canonical query string in its SigV4 check.

Usage: python3 moto_server.py [moto_server arguments]

With IAM enforced (INITIAL_NO_AUTH_ACTION_COUNT), moto checks signatures against the
request URL as werkzeug's `request.url` gives it, and werkzeug decodes percent-escapes
in the query (`prefix=a%2Fb` becomes `prefix=a/b`). moto then signs that decoded query
verbatim, while SigV4 signs each parameter URI-encoded (`prefix=a%2Fb`). So every
listing with a `/` in its prefix or delimiter is refused with SignatureDoesNotMatch, for
any correct client: boto3, restic, OpenDAL (moto issue #5948, open).

This launcher gives moto's check the parameters themselves, which botocore's signer
then encodes as AWS does. Signature checks and IAM policies are otherwise moto's own:
a wrong secret, an unknown key or a missing permission are still refused.
"""

import sys
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from moto.iam.access_control import IAMRequestBase
from moto.server import main

_create_aws_request = IAMRequestBase._create_aws_request


def _create_aws_request_with_params(self):
    request = _create_aws_request(self)
    parts = urlsplit(request.url)
    if parts.query:
        # werkzeug left `%`, `&`, `=`, `+` and `#` escaped, so parse_qsl still splits
        # and decodes the query exactly as the client meant it.
        request.params = parse_qsl(parts.query, keep_blank_values=True)
        request.url = urlunsplit(parts._replace(query=""))
    return request


IAMRequestBase._create_aws_request = _create_aws_request_with_params

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
