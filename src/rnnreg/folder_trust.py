"""Whether a folder of configs is this user's alone. A shared run folder's record can name a config folder
(`--config-dir`, `hydra.searchpath`) that another user could change: a config there can make Hydra build or call
anything, so rnnreg-report shows no command that reads one (rnnreg.report_commands.pasteable)."""

from __future__ import annotations

import errno
import functools
import os
import stat
import struct


def others_can_write(folder: str) -> bool:
    """Whether a config folder's files may be someone else's: the folder, anything in it (links followed, into the
    folders they point at too), or a folder or link on the way to any of them (which could put another in its
    place) owned by neither this user nor root, or writable by anyone or by a group that may have another user in
    it (by its mode bits or its POSIX ACL); a folder on the way with the sticky bit (/tmp) lets others move only
    what is theirs. A folder that is not there: no (the pasted command stops at it in one line)."""
    if not os.path.isdir(folder):
        return False
    try:
        if not _only_mine(folder):
            return True
        count = 0
        for top, dirs, files in os.walk(folder, followlinks=True, onerror=_raise):
            for name in dirs + files:
                count, path = count + 1, os.path.join(top, name)
                if count > CONFIG_FOLDER_ENTRIES:  # too many to read: not a folder of configs to trust unread
                    return True
                if not _only_mine(path) if os.path.islink(path) else _foreign(path):
                    return True
        return False
    except OSError:  # a link to nowhere inside, a folder it may not read: not known to be this user's alone
        return True


CONFIG_FOLDER_ENTRIES = 2000  # the most files and folders others_can_write reads in a config folder


def _me() -> set[int]:  # the users whose files are this user's own: itself and root
    return {os.getuid(), 0}


def _raise(err: OSError) -> None:  # os.walk's onerror: a folder it cannot read is not skipped unread
    raise err


def _only_mine(path: str, links: int = 0) -> bool:
    """Whether only this user and root can change what `path` names: each folder on its way neither another user's
    nor writable by others (sticky, as /tmp: but for an entry of one's own in it), each link on the way likewise to
    its target, and the file or folder itself not _foreign. OSError where a part of it is not there."""
    me = _me()
    names = [name for name in os.path.join(os.getcwd(), path).split("/") if name not in ("", ".")]
    current = "/"
    for i, name in enumerate(names):
        if name == "..":  # (`current` is a real folder: its parent is the one `..` names)
            current = os.path.dirname(current)
            continue
        above, entry = os.stat(current), os.path.join(current, name)
        found = os.lstat(entry)
        sticky_keeps = above.st_mode & stat.S_ISVTX and found.st_uid in me
        if above.st_uid not in me or (_others_write(current, above) and not sticky_keeps):
            return False
        if stat.S_ISLNK(found.st_mode):
            if links >= 40:  # (the kernel's own limit: a loop of links)
                return False
            return _only_mine(os.path.join(current, os.readlink(entry), *names[i + 1 :]), links + 1)
        current = entry
    return not _foreign(current)


def _foreign(path: str) -> bool:
    """Whether a file or folder (a link followed) is owned by another user than this one and root, or writable by
    others."""
    found = os.stat(path)
    return found.st_uid not in _me() or _others_write(path, found)


def _others_write(path: str, found: os.stat_result) -> bool:
    """Whether a file or folder (`found`: its stat) is writable by anyone, by a group that may have another user in
    it, or by another user or such a group its ACL names."""
    mode = found.st_mode
    if mode & stat.S_IWOTH or (mode & stat.S_IWGRP and _shared_group(found.st_gid)):
        return True
    return _acl_lets_others_write(path)


ACL_USER, ACL_GROUP, ACL_MASK, ACL_WRITE = 0x02, 0x08, 0x10, 0x02  # a POSIX ACL entry's tags, its write bit


def _acl_lets_others_write(path: str) -> bool:
    """Whether a POSIX access ACL on `path` lets another named user, or a named group that may have another user in
    it, write (through the ACL's mask): the mode bits show the mask alone, not whom it is for."""
    try:
        acl = os.getxattr(path, "system.posix_acl_access")
    except OSError as err:  # no ACL (ENODATA), or a filesystem without them: the mode bits say it all
        if err.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise  # (an ACL it may not read: others_can_write's caller counts it as someone else's)
    if len(acl) < 4 or (len(acl) - 4) % 8 or struct.unpack_from("<I", acl)[0] != 2:
        return True  # (an ACL of a form Linux does not write: not known to be this user's alone)
    entries = [struct.unpack_from("<HHI", acl, offset) for offset in range(4, len(acl), 8)]
    mask = next((perm for tag, perm, _ in entries if tag == ACL_MASK), ACL_WRITE)
    me = _me()
    return any(
        perm & mask & ACL_WRITE and ((tag == ACL_USER and who not in me) or (tag == ACL_GROUP and _shared_group(who)))
        for tag, perm, who in entries
    )


@functools.cache
def _shared_group(gid: int) -> bool:
    """Whether a group may have a user in it other than this one and root: any group this user is not in (its
    members are others, and a directory service need not list them), or one of its own with another member listed
    or that is another user's own group."""
    import grp
    import pwd

    if gid not in {os.getgid(), *os.getgroups()}:
        return True
    me = _me()
    try:
        members = {pwd.getpwnam(name).pw_uid for name in grp.getgrgid(gid).gr_mem}
    except KeyError:  # a group or member this machine does not name: not known to be this user's
        return True
    members |= {user.pw_uid for user in pwd.getpwall() if user.pw_gid == gid}
    return bool(members - me)
