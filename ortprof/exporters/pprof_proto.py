"""Message classes of pprof's profile.proto (package perftools.profiles), built at import time.

The schema is declared here as a FileDescriptorProto, so installing ortprof needs
no protoc and no generated code; the `protobuf` package makes the classes.
Field numbers follow github.com/google/pprof/proto/profile.proto. Only the
fields pprof, Pyroscope and the pprof-format decoder read are declared
(Breakdown/LabelSet, newer and unused by those readers, are left out).
"""
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "perftools.profiles"

_F = descriptor_pb2.FieldDescriptorProto
_INT64, _UINT64, _BOOL, _STRING, _MESSAGE = _F.TYPE_INT64, _F.TYPE_UINT64, _F.TYPE_BOOL, _F.TYPE_STRING, _F.TYPE_MESSAGE
_REPEATED = object()   # marker: the field is repeated

# message -> [(field name, number, type, message type or None, repeated?)]
_SCHEMA = {
    "Profile": [
        ("sample_type", 1, _MESSAGE, "ValueType", _REPEATED),
        ("sample", 2, _MESSAGE, "Sample", _REPEATED),
        ("mapping", 3, _MESSAGE, "Mapping", _REPEATED),
        ("location", 4, _MESSAGE, "Location", _REPEATED),
        ("function", 5, _MESSAGE, "Function", _REPEATED),
        ("string_table", 6, _STRING, None, _REPEATED),
        ("drop_frames", 7, _INT64, None, None),
        ("keep_frames", 8, _INT64, None, None),
        ("time_nanos", 9, _INT64, None, None),
        ("duration_nanos", 10, _INT64, None, None),
        ("period_type", 11, _MESSAGE, "ValueType", None),
        ("period", 12, _INT64, None, None),
        ("comment", 13, _INT64, None, _REPEATED),
        ("default_sample_type", 14, _INT64, None, None),
    ],
    "ValueType": [
        ("type", 1, _INT64, None, None),
        ("unit", 2, _INT64, None, None),
    ],
    "Sample": [
        ("location_id", 1, _UINT64, None, _REPEATED),   # leaf first
        ("value", 2, _INT64, None, _REPEATED),
        ("label", 3, _MESSAGE, "Label", _REPEATED),
    ],
    "Label": [
        ("key", 1, _INT64, None, None),
        ("str", 2, _INT64, None, None),
        ("num", 3, _INT64, None, None),
        ("num_unit", 4, _INT64, None, None),
    ],
    "Mapping": [
        ("id", 1, _UINT64, None, None),
        ("memory_start", 2, _UINT64, None, None),
        ("memory_limit", 3, _UINT64, None, None),
        ("file_offset", 4, _UINT64, None, None),
        ("filename", 5, _INT64, None, None),
        ("build_id", 6, _INT64, None, None),
        ("has_functions", 7, _BOOL, None, None),
        ("has_filenames", 8, _BOOL, None, None),
        ("has_line_numbers", 9, _BOOL, None, None),
        ("has_inline_frames", 10, _BOOL, None, None),
    ],
    "Location": [
        ("id", 1, _UINT64, None, None),
        ("mapping_id", 2, _UINT64, None, None),
        ("address", 3, _UINT64, None, None),
        ("line", 4, _MESSAGE, "Line", _REPEATED),
        ("is_folded", 5, _BOOL, None, None),
    ],
    "Line": [
        ("function_id", 1, _UINT64, None, None),
        ("line", 2, _INT64, None, None),
    ],
    "Function": [
        ("id", 1, _UINT64, None, None),
        ("name", 2, _INT64, None, None),
        ("system_name", 3, _INT64, None, None),
        ("filename", 4, _INT64, None, None),
        ("start_line", 5, _INT64, None, None),
    ],
}


def _file_descriptor():
    proto = descriptor_pb2.FileDescriptorProto(name="ortprof/pprof/profile.proto", package=PACKAGE,
                                               syntax="proto3")
    for message_name, fields in _SCHEMA.items():
        message = proto.message_type.add(name=message_name)
        for name, number, kind, type_name, repeated in fields:
            field = message.field.add(name=name, number=number, type=kind,
                                      label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if type_name:
                field.type_name = f".{PACKAGE}.{type_name}"
    return proto


# A private pool: another copy of profile.proto loaded in the process cannot clash with it.
_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(_file_descriptor().SerializeToString())
# GetMessageClass is protobuf >= 4.22; MessageFactory.GetPrototype the older spelling.
_message_class = getattr(message_factory, "GetMessageClass", None) or message_factory.MessageFactory(_POOL).GetPrototype
_classes = {name: _message_class(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in _SCHEMA}

Profile = _classes["Profile"]
ValueType = _classes["ValueType"]
Sample = _classes["Sample"]
Label = _classes["Label"]
Mapping = _classes["Mapping"]
Location = _classes["Location"]
Line = _classes["Line"]
Function = _classes["Function"]
