-- Device lists while a room's state is partial (MSC3902, Device management).
-- device_list_pos: the device-list stream head when the partial join was
-- stored; the local changes after it are sent, once the state is complete,
-- to the servers the partial state did not name.
ALTER TABLE partial_state_rooms ADD COLUMN device_list_pos BIGINT NOT NULL DEFAULT 0;

-- Remote users whose device-list update came while some room's state was
-- partial and who shared no room with a local user then: they may be one
-- of its members we cannot see yet. Once a room's state is complete, its
-- members among them are shown as changed; the rest are dropped when no
-- room is partial any more.
CREATE TABLE pending_remote_device_lists (
    user_id TEXT PRIMARY KEY
);
