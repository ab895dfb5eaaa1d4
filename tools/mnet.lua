-- Wireshark / tshark dissector for MNET v1 (a reliable byte stream over UDP).
--
--   tshark -X lua_script:tools/mnet.lua -r capture.pcap -Y mnet
--   tshark -X lua_script:tools/mnet.lua -o mnet.udp_port:9000 -i lo
--
-- Datagrams on the configured UDP port (preference "mnet.udp_port", 0 for
-- none) are MNET; on other ports a heuristic takes a datagram whose length
-- and first byte fit exactly one MNET packet type (INIT must carry the
-- "MNET" magic).  Wireshark's TAPA heuristic claims short UDP payloads
-- (MNET's 4- and 32-byte packets) before any Lua heuristic: set the port,
-- or add "--disable-protocol tapa".  All integers are little-endian; every
-- packet but INIT carries a 3-byte connection tag at bytes 1..3.

local mnet = Proto("mnet", "MNET")

local types = {
  [0] = "DATA", [1] = "INIT", [2] = "COOKIE", [3] = "COOKIE-ECHO", [4] = "COOKIE-ACK",
  [5] = "SHUTDOWN", [6] = "SHUTDOWN-ACK", [7] = "SHUTDOWN-COMPLETE", [8] = "ABORT",
}

local f = mnet.fields
f.type = ProtoField.uint8("mnet.type", "Type", base.DEC, types)
f.tag = ProtoField.bytes("mnet.tag", "Connection tag")
f.magic = ProtoField.string("mnet.magic", "Magic")
f.version = ProtoField.uint8("mnet.version", "Version")
f.connector_tag = ProtoField.bytes("mnet.connector_tag", "Connector tag")
f.listener_tag = ProtoField.bytes("mnet.listener_tag", "Listener tag")
f.expiration = ProtoField.uint32("mnet.expiration", "Expiration (Unix time)")
f.hmac = ProtoField.bytes("mnet.hmac", "HMAC-SHA1")
f.seq = ProtoField.uint32("mnet.seq", "Outgoing sequence (stream end offset)")
f.ack = ProtoField.uint32("mnet.ack", "Acknowledged bytes")
f.length = ProtoField.uint16("mnet.length", "Data length")
f.payload = ProtoField.bytes("mnet.payload", "Payload")

mnet.prefs.udp_port = Pref.uint("UDP port", 0, "UDP port decoded as MNET (0: heuristic only)")

local fixed_length = { [2] = 32, [3] = 32, [4] = 4, [5] = 8, [6] = 4, [7] = 4, [8] = 4 }

local function looks_like_mnet(tvb)
  local length = tvb:len()
  if length < 4 then return false end
  local kind = tvb(0, 1):uint()
  if kind == 1 then
    return length == 9 and tvb(1, 4):string() == "MNET"
  elseif kind == 0 then
    return length >= 14 and tvb(12, 2):le_uint() == length - 14
  end
  return fixed_length[kind] == length
end

function mnet.dissector(tvb, pinfo, tree)
  if not looks_like_mnet(tvb) then return 0 end
  local kind = tvb(0, 1):uint()
  pinfo.cols.protocol = "MNET"
  local root = tree:add(mnet, tvb(), "MNET " .. types[kind])
  root:add(f.type, tvb(0, 1))
  local info = types[kind]
  if kind == 1 then
    root:add(f.magic, tvb(1, 4))
    root:add(f.version, tvb(5, 1))
    root:add(f.connector_tag, tvb(6, 3))
  elseif kind == 2 or kind == 3 then
    root:add(f.listener_tag, tvb(1, 3))
    root:add(f.connector_tag, tvb(4, 3))
    root:add(f.version, tvb(7, 1))
    root:add_le(f.expiration, tvb(8, 4))
    root:add(f.hmac, tvb(12, 20))
  else
    root:add(f.tag, tvb(1, 3))
    if kind == 0 then
      root:add_le(f.seq, tvb(4, 4))
      root:add_le(f.ack, tvb(8, 4))
      root:add_le(f.length, tvb(12, 2))
      local size = tvb(12, 2):le_uint()
      if size > 0 then root:add(f.payload, tvb(14, size)) end
      info = string.format("DATA seq=%u ack=%u len=%u", tvb(4, 4):le_uint(), tvb(8, 4):le_uint(), size)
    elseif kind == 5 then
      root:add_le(f.ack, tvb(4, 4))
    end
  end
  pinfo.cols.info = info
  return tvb:len()
end

local function heuristic(tvb, pinfo, tree)
  if not looks_like_mnet(tvb) then return false end
  mnet.dissector(tvb, pinfo, tree)
  return true
end

mnet:register_heuristic("udp", heuristic)

local registered = 0
function mnet.prefs_changed()
  local udp = DissectorTable.get("udp.port")
  if registered ~= 0 then udp:remove(registered, mnet) end
  registered = mnet.prefs.udp_port
  if registered ~= 0 then udp:add(registered, mnet) end
end
