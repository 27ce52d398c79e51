"""The browser layer: operator console and customer portal on the daemon's FastAPI app.

- ``auth``: password hashes, signed expiring session cookies, CSRF tokens (pure);
- ``config``: the ``daemon.web`` block; ``users``: the users file, the signing secret;
- ``i18n``: en / zh-CN catalogs and number, money and time formats;
- ``access``: which contracts and sites a user may see;
- ``pages``: the routes (``mount`` adds them to an app), ``charts``: server-side SVG,
  ``statement_files``: CSV and PDF statements.

See docs/web.md.
"""
