<?php
/*
 * SabreDAV 1.8 (Debian's php-sabre-dav) as a CalDAV test server for caldavfs.
 *
 *   SABREDAV_DATA=/tmp/dir SABREDAV_USER=alice SABREDAV_PASSWORD=secret-pw \
 *       php -S 127.0.0.1:PORT tests/sabredav/server.php
 *
 * The built-in server routes every request to this script. Data: $SABREDAV_DATA/db.sqlite, created on the
 * first request with the schema of the package's examples/sql/sqlite.{calendars,principals,locks}.sql
 * (copied below: Debian docker images often drop /usr/share/doc), plus the user's principal.
 * Basic auth against $SABREDAV_USER / $SABREDAV_PASSWORD. No sync-collection: 1.8 has none.
 */

// Sabre 1.8 predates PHP 8 (it warns "Private methods cannot be final"): never print errors into a
// response; log them (deprecations aside) to the built-in server's stderr.
error_reporting(E_ALL & ~E_DEPRECATED & ~E_USER_DEPRECATED & ~E_STRICT);
ini_set('display_errors', '0');
ini_set('log_errors', '1');
date_default_timezone_set('UTC');

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($path === '/.well-known/caldav' || $path === '/.well-known/caldav/') {
    // What Nextcloud and Baikal hosts add in front of SabreDAV (the library itself answers 404 here).
    header('Location: /', true, 301);
    return true;
}

require_once 'Sabre/autoload.php';

$dataDir = getenv('SABREDAV_DATA') ?: (__DIR__ . '/data');
$user = getenv('SABREDAV_USER') ?: 'alice';
$password = getenv('SABREDAV_PASSWORD');
if ($password === false) {
    $password = 'secret-pw';
}

if (!is_dir($dataDir)) {
    mkdir($dataDir, 0700, true);
}
$dbFile = $dataDir . '/db.sqlite';
$isNew = !file_exists($dbFile);
$pdo = new PDO('sqlite:' . $dbFile);
$pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
$pdo->exec('PRAGMA busy_timeout = 10000');
if ($isNew) {
    $pdo->exec(<<<'SQL'
BEGIN;
CREATE TABLE calendarobjects (id integer primary key asc, calendardata blob, uri text, calendarid integer,
    lastmodified integer, etag text, size integer, componenttype text, firstoccurence integer,
    lastoccurence integer);
CREATE TABLE calendars (id integer primary key asc, principaluri text, displayname text, uri text,
    ctag integer, description text, calendarorder integer, calendarcolor text, timezone text,
    components text, transparent bool);
CREATE TABLE principals (id INTEGER PRIMARY KEY ASC, uri TEXT, email TEXT, displayname TEXT, vcardurl TEXT,
    UNIQUE(uri));
CREATE TABLE groupmembers (id INTEGER PRIMARY KEY ASC, principal_id INTEGER, member_id INTEGER,
    UNIQUE(principal_id, member_id));
CREATE TABLE locks (id integer primary key asc, owner text, timeout integer, created integer, token text,
    scope integer, depth integer, uri text);
COMMIT;
SQL);
    $add = $pdo->prepare('INSERT INTO principals (uri, email, displayname) VALUES (?, ?, ?)');
    $add->execute(["principals/$user", "$user@example.org", $user]);
    $add->execute(["principals/$user/calendar-proxy-read", null, null]);
    $add->execute(["principals/$user/calendar-proxy-write", null, null]);
}

class EnvBasicAuth extends \Sabre\DAV\Auth\Backend\AbstractBasic
{
    public function __construct(private string $user, private string $password)
    {
    }

    protected function validateUserPass($username, $password)
    {
        return hash_equals($this->user, (string)$username) && hash_equals($this->password, (string)$password);
    }
}

$principalBackend = new \Sabre\DAVACL\PrincipalBackend\PDO($pdo);
$calendarBackend = new \Sabre\CalDAV\Backend\PDO($pdo);
$server = new \Sabre\DAV\Server([
    new \Sabre\CalDAV\Principal\Collection($principalBackend),
    new \Sabre\CalDAV\CalendarRootNode($principalBackend, $calendarBackend),
]);
$server->setBaseUri('/');
$server->addPlugin(new \Sabre\DAV\Auth\Plugin(new EnvBasicAuth($user, $password), 'SabreDAV'));
$server->addPlugin(new \Sabre\DAVACL\Plugin());
$server->addPlugin(new \Sabre\CalDAV\Plugin());
if (class_exists('\Sabre\DAV\Sync\Plugin')) {  // SabreDAV >= 2.0 only
    $server->addPlugin(new \Sabre\DAV\Sync\Plugin());
}
$server->exec();
return true;
