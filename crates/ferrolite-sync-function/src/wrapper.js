// The sync function's environment. Evaluated once per engine, before the configured source:
// it installs the helpers as globals and evaluates to the entry point that runs the sync
// function on one revision and returns what it asked for, as JSON.
//
// The helpers only collect; the Rust side validates names, drops `*` from grants, removes
// duplicates and parses expiry values.
(function (global) {
    "use strict";

    // The current call's output, or null outside a call (helpers then do nothing).
    var out = null;
    // The writing user ({name, roles, channels}), or null for an admin write.
    var user = null;
    // Kept from the start: a sync function that replaces `JSON` only harms itself.
    var parse = JSON.parse;
    var stringify = JSON.stringify;

    function list(value) {
        if (value === null || value === undefined) {
            return [];
        }
        return Array.isArray(value) ? value : [value];
    }

    // The strings of a string-or-array argument; other items are reported and skipped.
    function strings(value, helper) {
        var items = list(value);
        var found = [];
        for (var i = 0; i < items.length; i++) {
            var item = items[i];
            if (typeof item === "string") {
                found.push(item);
            } else if (item !== null && item !== undefined && out !== null) {
                out.warnings.push(helper + "() ignored a value of type " + typeof item);
            }
        }
        return found;
    }

    function anyOf(wanted, held) {
        for (var i = 0; i < wanted.length; i++) {
            if (held.indexOf(wanted[i]) >= 0) {
                return true;
            }
        }
        return false;
    }

    function refuse(status, message) {
        if (out !== null && out.rejected === null) {
            out.rejected = {status: status, message: String(message)};
        }
    }

    function forbid(message) {
        throw {forbidden: message};
    }

    global.channel = function () {
        if (out === null) {
            return;
        }
        for (var i = 0; i < arguments.length; i++) {
            var names = strings(arguments[i], "channel");
            for (var j = 0; j < names.length; j++) {
                out.channels.push(names[j]);
            }
        }
    };

    global.access = function (principals, channels) {
        if (out !== null) {
            out.access.push([strings(principals, "access"), strings(channels, "access")]);
        }
    };

    global.role = function (users, roles) {
        if (out !== null) {
            out.roles.push([strings(users, "role"), strings(roles, "role")]);
        }
    };

    global.expiry = function (value) {
        if (out === null || value === null || value === undefined) {
            return;
        }
        if (typeof value === "number" || typeof value === "string") {
            out.expiry.push(value);
        } else if (value instanceof Date) {
            if (isNaN(value.getTime())) {
                out.warnings.push("expiry() ignored an invalid date");
            } else {
                out.expiry.push(value.toISOString());
            }
        } else {
            out.warnings.push("expiry() ignored a value of type " + typeof value);
        }
    };

    global.reject = function (status, message) {
        if (typeof status === "number" && status >= 400 && status <= 599) {
            refuse(Math.floor(status), message);
        } else if (out !== null) {
            out.warnings.push("reject() ignored the status " + String(status));
        }
    };

    global.requireUser = function (names) {
        if (user !== null && list(names).indexOf(user.name) < 0) {
            forbid("sg wrong user");
        }
    };

    global.requireRole = function (roles) {
        if (user !== null && !anyOf(list(roles), user.roles)) {
            forbid("sg missing role");
        }
    };

    global.requireAccess = function (channels) {
        if (user === null || user.channels.indexOf("*") >= 0) {
            return;
        }
        var wanted = list(channels);
        // Every user can read the public channel.
        if (wanted.indexOf("!") < 0 && !anyOf(wanted, user.channels)) {
            forbid("sg missing channel access");
        }
    };

    global.requireAdmin = function () {
        if (user !== null) {
            forbid("sg admin required");
        }
    };

    // console.log() and friends: the lines go to the gateway's log after the call.
    function text(value) {
        if (typeof value === "string") {
            return value;
        }
        try {
            var json = value !== null && typeof value === "object" ? stringify(value) : undefined;
            return json === undefined ? String(value) : json;
        } catch (e) {
            return String(value);
        }
    }

    function logger(level) {
        return function () {
            if (out === null) {
                return;
            }
            var parts = [];
            for (var i = 0; i < arguments.length; i++) {
                parts.push(text(arguments[i]));
            }
            out.logs.push([level, parts.join(" ")]);
        };
    }

    global.console = {
        log: logger("info"),
        info: logger("info"),
        debug: logger("debug"),
        warn: logger("warn"),
        error: logger("error")
    };
    global.log = global.console.log;

    function describe(error) {
        try {
            var text = String(error);
            if (error !== null && typeof error === "object" && typeof error.stack === "string") {
                text += "\n" + error.stack;
            }
            return text;
        } catch (e) {
            return "an exception that cannot be printed";
        }
    }

    return function (syncFn, docJson, oldDocJson, userJson) {
        out = {
            channels: [],
            access: [],
            roles: [],
            expiry: [],
            rejected: null,
            exception: null,
            warnings: [],
            logs: []
        };
        user = parse(userJson);
        try {
            syncFn(parse(docJson), parse(oldDocJson), {xattrs: {}});
        } catch (e) {
            if (e !== null && typeof e === "object" && e.forbidden !== undefined) {
                refuse(403, e.forbidden);
            } else if (e !== null && typeof e === "object" && e.unauthorized !== undefined) {
                refuse(401, e.unauthorized);
            } else {
                out.exception = describe(e);
                refuse(500, "Exception in JS sync function");
            }
        }
        var result = stringify(out);
        out = null;
        user = null;
        return result;
    };
})(globalThis)
