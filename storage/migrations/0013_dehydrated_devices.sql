-- MSC3814 dehydrated devices: at most one per user. The device itself is an
-- ordinary row in devices (keys, to-device inbox) that has no access token;
-- this table marks it and holds the client's encrypted device_data.
CREATE TABLE dehydrated_devices (
    user_id     TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    device_data TEXT NOT NULL
);
